"""LightGBM's own single-row fast path, for the one-lead request.

`Booster.predict` re-parses its parameters and converts its input on every call: for one row
that costs several times the trees' own work. LightGBM's C API has a path made for this
(`LGBM_BoosterPredictForMatSingleRowFastInit` once, `...SingleRowFast` per row), which this
binds for the raw margin and for the SHAP contributions, with one thread. Results are
LightGBM's own, equal to `Booster.predict` (tested to 1e-12).
"""

from __future__ import annotations

import ctypes
import threading

import lightgbm as lgb
import numpy as np
from lightgbm.basic import _LIB, _safe_call

ROW_BY_ROW = 16
"""Up to this many rows, LightGBM's single-row path row after row (`SingleRow.margins`) is
faster than one `Booster.predict`, which re-reads its parameters and builds a predictor on
every call. With the rows in one loop (`margins`), one thread, CPU per call (load 16,
benchmarks/bench_outlook.py's model): a 200-tree amount model 8 rows 32 against 61 us, 16
rows 59 against 69, 32 rows 126 against 135; the 52-tree lead model 16 rows 32 against 39,
32 rows 63 against 57. The scorer's batches of requests that arrive together are this small;
both give the same bits (tests/model/test_single_row.py)."""
CONTRIBUTIONS_ROW_BY_ROW = 6
"""`ROW_BY_ROW` for SHAP values: a row's own call (`SingleRow.contributions`) against one
`Booster.predict`, whose fixed cost is a smaller share of TreeSHAP's."""
_RAW_SCORE, _CONTRIB = 1, 3
_FLOAT64 = 1
_PREDICT_ROW = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                ctypes.c_void_p)(
    ("LGBM_BoosterPredictForMatSingleRowFast", _LIB))
"""`LGBM_BoosterPredictForMatSingleRowFast` with its four pointers declared, so that `margins`
passes addresses as plain ints (a row's own pointer object costs more than its 50 trees); a
prototype of its own, as LightGBM's module calls the function through `_LIB` undeclared."""


def raw_margins(booster: lgb.Booster, X: np.ndarray, one: SingleRow | None, threads: int = 1,
            few: int = ROW_BY_ROW) -> np.ndarray:
    """Raw scores of `X`'s rows: `one`'s single-row path up to `few` rows, else one
    `Booster.predict` on `threads` threads. The one definition the bundle and the outlook's
    boosters both predict by; either way the bits are LightGBM's own."""
    if one is not None and 0 < len(X) <= few:
        return one.margins(X)
    return np.asarray(booster.predict(X, raw_score=True, num_threads=threads))


def raw_contributions(booster: lgb.Booster, X: np.ndarray, one: SingleRow | None,
                  threads: int = 1) -> np.ndarray:
    """(rows, features + 1) SHAP values, as `raw_margins` chooses its path."""
    if one is not None and 0 < len(X) <= CONTRIBUTIONS_ROW_BY_ROW:
        return np.vstack([one.contributions(r) for r in X])
    return np.asarray(booster.predict(X, pred_contrib=True, num_threads=threads))


class SingleRow:
    """Margin and contributions of one row at a time from a booster (thread-safe)."""

    def __init__(self, booster: lgb.Booster) -> None:
        self._booster = booster  # the configs point into it: keep it alive
        self.n_features = booster.num_feature()
        self._lock = threading.Lock()
        self._raw = self._init(_RAW_SCORE)
        self._contrib = self._init(_CONTRIB)
        self._out_raw = np.zeros(1)
        self._out_contrib = np.zeros(self.n_features + 1)
        self._len = ctypes.c_int64(0)
        # pointers made once: ctypes' data_as costs more per call than a small tree's predict
        self._out_raw_p = self._out_raw.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._out_contrib_p = self._out_contrib.ctypes.data_as(ctypes.POINTER(ctypes.c_double))

    def _init(self, kind: int) -> ctypes.c_void_p:
        handle = ctypes.c_void_p()
        _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
            self._booster._handle, ctypes.c_int(kind), ctypes.c_int(0), ctypes.c_int(-1),
            ctypes.c_int(_FLOAT64), ctypes.c_int32(self.n_features),
            ctypes.c_char_p(b"num_threads=1"), ctypes.byref(handle)))
        return handle

    def _run(self, config: ctypes.c_void_p, row: np.ndarray, out: np.ndarray,
             out_p: ctypes._Pointer[ctypes.c_double]) -> np.ndarray:
        data = np.ascontiguousarray(row, dtype=np.float64)
        if data.shape != (self.n_features,):  # LightGBM would read past the end of it
            raise ValueError(f"a row of {data.shape} values; the model reads {self.n_features}")
        with self._lock:
            _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFast(
                config, ctypes.c_void_p(data.ctypes.data), ctypes.byref(self._len), out_p))
            return out.copy()

    def margin(self, row: np.ndarray) -> float:
        return float(self._run(self._raw, row, self._out_raw, self._out_raw_p)[0])

    def margins(self, X: np.ndarray) -> np.ndarray:
        """(rows,) the margin of each row of `X`, row after row under one lock: `margin`'s
        numbers, without its per-call conversions (a hazard's 8 period rows: ~3 us each)."""
        data = np.ascontiguousarray(X, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != self.n_features:  # LightGBM would read past it
            raise ValueError(f"rows of {data.shape[1:]} values; the model reads "
                             f"{self.n_features}")
        out = np.empty(len(data))
        row, step, at = data.ctypes.data, data.strides[0], out.ctypes.data
        length = ctypes.addressof(self._len)
        with self._lock:
            for i in range(len(data)):
                _safe_call(_PREDICT_ROW(self._raw, row + i * step, length, at + 8 * i))
        return out

    def contributions(self, row: np.ndarray) -> np.ndarray:
        """(features + 1,): SHAP values in log-odds, the bias last."""
        return self._run(self._contrib, row, self._out_contrib, self._out_contrib_p)

    def __del__(self) -> None:
        for handle in (getattr(self, "_raw", None), getattr(self, "_contrib", None)):
            if handle is not None and handle.value:
                _LIB.LGBM_FastConfigFree(handle)
