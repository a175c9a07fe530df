"""The champions in memory, and how they follow the registry without dropping a request.

Loading happens in the app's lifespan, never at import. A refresh compares each champion alias
with the version in memory; a new version is loaded beside the old one and swapped in with one
assignment, so requests in flight finish on the model they started with.

A champion that fails to load (its files damaged, a bundle this code cannot read) never
leaves the scorer with nothing: the last good champion serves instead, the one in memory at a
reload, or at start the newest former champion (by promotion) that loads. `fallbacks` says
which version serves in its place and why, and /readyz reports it as degraded.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import pandas as pd

from propensity.models.bundle import ModelBundle
from propensity.monitoring.counters import Binning
from propensity.monitoring.reference import Reference
from propensity.registry import (
    CHAMPION,
    champion_history,
    configure,
    load_holdout,
    load_reference,
    load_version,
    version_of,
)
from propensity.settings import Settings

log = logging.getLogger("propensity.models")


@dataclass(frozen=True)
class Loaded:
    name: str
    version: str
    bundle: ModelBundle
    holdout: pd.DataFrame | None = None
    """The champion's holdout predictions: what threshold curves are drawn from."""
    cache: dict[str, object] = field(default_factory=dict)
    reference: Reference | None = None
    """The training rows' binned distributions (None for a model registered without one)."""
    binning: Binning | None = None


@dataclass
class ModelStore:
    settings: Settings
    names: list[str]
    models: dict[str, Loaded] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    fallbacks: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    """name -> (version serving, champion version that failed, why) while a champion fails."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, name: str) -> Loaded | None:
        return self.models.get(name)

    def _load(self, name: str, got: str) -> Loaded:
        bundle = load_version(name, got, settings=self.settings)
        if bundle.kind == "export":
            _ = bundle.online  # the one-lead executor is prepared before the first request
        try:
            holdout = load_holdout(name, got, settings=self.settings)
        except Exception:  # a model without evaluation artifacts still serves
            log.warning("no holdout for %s v%s: threshold curves unavailable", name, got)
            holdout = None
        try:
            reference: Reference | None = load_reference(name, got, settings=self.settings)
        except Exception:  # registered before references existed: served, not monitored
            log.warning("no drift reference for %s v%s: its drift is not measured", name, got)
            reference = None
        return Loaded(name, got, bundle, holdout, reference=reference,
                      binning=None if reference is None else Binning.of(reference))

    def refresh(self) -> dict[str, str]:
        """Load every champion whose version changed; returns name -> version serving."""
        with self._lock:
            client = configure(self.settings)
            for name in self.names:
                try:
                    wanted = version_of(client, name, CHAMPION)
                except Exception as exc:  # registry unreachable: keep serving
                    self.errors[name] = f"registry: {exc}"
                    continue
                current = self.models.get(name)
                if wanted is None or (current is not None and current.version == wanted):
                    if wanted is not None:
                        self.errors.pop(name, None)
                        self.fallbacks.pop(name, None)
                    continue
                try:
                    loaded = self._load(name, wanted)
                except Exception as exc:
                    log.exception("loading %s v%s failed; serving the last good champion",
                                  name, wanted)
                    reason = f"{type(exc).__name__}: {exc}"[:300]
                    self.errors[name] = f"v{wanted} failed to load: {reason}"
                    serving = current or self._last_good(name, wanted)
                    if serving is None:
                        self.fallbacks.pop(name, None)
                        continue
                    self.models[name] = serving
                    self.fallbacks[name] = (serving.version, wanted, reason)
                    continue
                self.models[name] = loaded
                self.errors.pop(name, None)
                self.fallbacks.pop(name, None)
                log.info("serving %s v%s", name, loaded.version)
            return {n: m.version for n, m in self.models.items()}

    def _last_good(self, name: str, failed: str) -> Loaded | None:
        """The newest former champion (by its promotion) that loads, other than `failed`."""
        try:
            history = champion_history(name, settings=self.settings)
        except Exception:
            log.exception("the champion history of %s cannot be read", name)
            return None
        for entry in history:
            if entry["version"] == failed:
                continue
            try:
                loaded = self._load(name, entry["version"])
            except Exception:
                log.exception("former champion %s v%s does not load either", name,
                              entry["version"])
                continue
            log.warning("serving %s v%s in place of champion v%s", name, loaded.version, failed)
            return loaded
        return None
