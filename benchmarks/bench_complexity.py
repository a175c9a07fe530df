"""Functions over the size limits: more than 60 lines or a cyclomatic complexity over 15
(radon's count), across the library and the server. A function that long or that branched is
where a change costs most; the list is the work left, longest first.

    .venv/bin/python benchmarks/bench_complexity.py            # src/ and serving/
    .venv/bin/python benchmarks/bench_complexity.py serving/routes --lines 40

Exit status 1 while any function is over a limit (so CI can hold the line), 0 otherwise.
Alembic migrations are left out: they are written once and never called by the code.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

from radon.complexity import cc_visit
from radon.visitors import Function

ROOT = Path(__file__).resolve().parent.parent
SKIPPED = ("migrations",)


@dataclass(frozen=True)
class Measured:
    path: str
    line: int
    name: str
    lines: int
    complexity: int


def _lengths(tree: ast.AST) -> dict[tuple[int, str], int]:
    """Lines of each function, decorators and docstring included, by (first line, name)."""
    return {(node.lineno, node.name): (node.end_lineno or node.lineno) - node.lineno + 1
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def measure(path: Path) -> list[Measured]:
    """Every function and method of one file."""
    text = path.read_text(encoding="utf-8")
    lengths = _lengths(ast.parse(text))
    out = []
    for f in cc_visit(text):
        if not isinstance(f, Function):  # a class: its methods are listed on their own
            continue
        name = f"{f.classname}.{f.name}" if f.classname else f.name
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        out.append(Measured(str(shown), f.lineno, name,
                            lengths.get((f.lineno, f.name), f.endline - f.lineno + 1),
                            f.complexity))
    return out


def over(paths: list[Path], max_lines: int, max_complexity: int) -> list[Measured]:
    found = []
    for folder in paths:
        for path in sorted(folder.rglob("*.py") if folder.is_dir() else [folder]):
            if any(part in SKIPPED for part in path.parts):
                continue
            found += [m for m in measure(path)
                      if m.lines > max_lines or m.complexity > max_complexity]
    return sorted(found, key=lambda m: (-max(m.lines / max_lines,
                                             m.complexity / max_complexity), m.path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path,
                        default=[ROOT / "src", ROOT / "serving"])
    parser.add_argument("--lines", type=int, default=60)
    parser.add_argument("--complexity", type=int, default=15)
    args = parser.parse_args()
    found = over([p.resolve() for p in args.paths], args.lines, args.complexity)
    for m in found:
        print(f"{m.path}:{m.line}  {m.name}  {m.lines} lines, complexity {m.complexity}")
    print(f"{len(found)} functions over {args.lines} lines or complexity {args.complexity}")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
