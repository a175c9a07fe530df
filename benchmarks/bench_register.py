"""Registering a model, the gate and loading the champion, on the demo's lead-conversion.

Trains twice on the demo export (20,000 leads, seed 7, the search off: the figures here are
the registry's, not training's) and times, for each: `log_and_register`, then `promote` (the
first is the first champion; the second runs the gate against it), then `load_model`. The
trained results can be kept (`--results FILE`, pickled) so that two versions of the registry
code are timed on the same results, one right after the other:

    PYTHONPATH=OLD/src .venv/bin/python benchmarks/bench_register.py --results /tmp/r.pkl
    PYTHONPATH=src .venv/bin/python benchmarks/bench_register.py --results /tmp/r.pkl
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
import time
from pathlib import Path

import propensity
from propensity import registry
from propensity.export_reader import load_export
from propensity.rows import lead_rows
from propensity.settings import Settings
from propensity.synthetic import SyntheticConfig, generate_export, write_export
from propensity.training import TrainConfig, train_export


def trained(results: Path | None) -> list[tuple[object, object]]:
    if results is not None and results.exists():
        return pickle.loads(results.read_bytes())  # our own file, just written
    with tempfile.TemporaryDirectory() as tmp:
        tables, truth = generate_export(SyntheticConfig(n_leads=20_000, seed=7))
        write_export(tables, truth, Path(tmp))
        export = load_export(Path(tmp))
        out = []
        for _ in range(2):
            result = train_export(export, TrainConfig.model_validate({"search": False}))
            out.append((result, lead_rows(export, result.holdout[["lead_id", "as_of"]].head(3))))
    if results is not None:
        results.write_bytes(pickle.dumps(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, help="pickled training results (made once)")
    args = parser.parse_args()
    print(f"code: {propensity.__file__}")
    results = trained(args.results)
    with tempfile.TemporaryDirectory() as store:
        settings = Settings(models_dir=Path(store))
        registry.configure(settings)
        for result, example in results:
            start = time.perf_counter()
            reg = registry.log_and_register(result, data={"path": "demo"},
                                            input_example=example, settings=settings)
            print(f"register v{reg.version}: {time.perf_counter() - start:.1f} s", flush=True)
            start = time.perf_counter()
            done = registry.promote(reg.name, reg.version, settings=settings)
            print(f"promote v{reg.version}: {time.perf_counter() - start:.1f} s "
                  f"({done.reason})", flush=True)
        start = time.perf_counter()
        registry.load_model("lead-conversion", settings=settings)
        print(f"load the champion: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
