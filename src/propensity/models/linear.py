"""Logistic regression on the model matrix: the statistician's default, and a candidate that ships.

On data whose signal is close to additive in log-odds it ties or beats a gradient-boosted model,
so training fits it on the same rows and lets validation decide. It is stored as plain numbers
(medians, scales, weights: no pickle) and explains itself exactly: a feature's contribution is
its term minus that term's training mean, so contributions plus the bias add up to the margin,
as LightGBM's SHAP values do.

Numbers: missing -> the training median (plus a missing-indicator weight), signed log1p,
standardised. Categories: one weight per level (the vocabulary already groups rare levels) and
one for missing.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from propensity.coding import Column

_CHUNK = 8192


def _slog(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.log1p(np.abs(v))


class LinearScorer:
    """Margin and exact per-feature contributions of a logistic regression over the matrix."""

    def __init__(self, columns: Sequence[Column], C: float = 0.5) -> None:
        self.columns = list(columns)
        self.C = C
        self._table: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._w_over_sd: np.ndarray | None = None

    # --- fitting ----------------------------------------------------------------------------
    def _design(self, X: np.ndarray) -> sp.csr_matrix:
        n = len(X)
        blocks = []
        num = X[:, self.numeric_]
        miss = np.isnan(num)
        z = (_slog(np.where(miss, self.median_, num)) - self.mu_) / self.sd_
        blocks.append(sp.csr_matrix(z))
        blocks.append(sp.csr_matrix(miss.astype("float64")))
        for j, size in zip(self.categorical_, self.levels_, strict=True):
            codes = X[:, j]
            idx = np.where(np.isnan(codes), size - 1, codes).astype("int64")
            blocks.append(sp.csr_matrix((np.ones(n), (np.arange(n), idx)), shape=(n, size)))
        return sp.hstack(blocks, format="csr")

    def fit(self, X: np.ndarray, y: np.ndarray,
            sample_weight: np.ndarray | None = None) -> LinearScorer:
        self.numeric_ = np.array([i for i, c in enumerate(self.columns) if c.categories is None],
                                 dtype="int64")
        self.categorical_ = np.array([i for i, c in enumerate(self.columns)
                                      if c.categories is not None], dtype="int64")
        self.levels_ = [len(self.columns[j].categories or ()) + 1 for j in self.categorical_]
        num = X[:, self.numeric_]
        with warnings.catch_warnings():  # an all-missing column has no median: 0 then
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(num, axis=0) if len(num) else np.zeros(num.shape[1])
        self.median_ = np.where(np.isnan(med), 0.0, med)
        s = _slog(np.where(np.isnan(num), self.median_, num))
        self.mu_ = s.mean(axis=0) if len(s) else np.zeros(s.shape[1])
        sd = s.std(axis=0) if len(s) else np.ones(s.shape[1])
        # a constant column's sd comes out ~1e-16, not 0: its z would be rounding noise
        # scaled to +-1 in training, and a new value at scoring time would be worth 1e15
        self.sd_ = np.where(sd > 1e-9, sd, 1.0)
        lr = LogisticRegression(C=self.C, max_iter=500, tol=1e-3)
        lr.fit(self._design(X), y, sample_weight=sample_weight)
        w = lr.coef_[0]
        k = len(self.numeric_)
        self.w_num_, self.w_miss_ = w[:k], w[k:2 * k]
        at = 2 * k
        self.w_cat_ = []
        self._table = self._w_over_sd = None
        for size in self.levels_:
            self.w_cat_.append(w[at:at + size])
            at += size
        self.intercept_ = float(lr.intercept_[0])
        self.term_mean_ = self._terms(X).mean(axis=0) if len(X) else np.zeros(len(self.columns))
        return self

    # --- scoring ----------------------------------------------------------------------------
    def _terms(self, X: np.ndarray) -> np.ndarray:
        """(n, features): each feature's additive term of the margin."""
        out = np.zeros((len(X), len(self.columns)))
        num = X[:, self.numeric_]
        miss = np.isnan(num)
        z = (_slog(np.where(miss, self.median_, num)) - self.mu_) / self.sd_
        out[:, self.numeric_] = z * self.w_num_ + miss * self.w_miss_
        if len(self.categorical_):
            flat, offset, last = self._category_table()
            codes = X[:, self.categorical_]
            at = np.where(np.isnan(codes), last, codes + offset).astype("int64")
            out[:, self.categorical_] = flat[at]
        return out

    def _category_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every level's weight in one array, so all categorical columns are looked up in one
        numpy call (a loop over columns cost most of a one-lead request's linear score)."""
        if self._table is None:
            sizes = np.asarray(self.levels_, dtype="int64")
            offset = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype("float64")
            self._table = (np.concatenate(self.w_cat_), offset, offset + sizes - 1)
        return self._table

    def _scale(self) -> np.ndarray:
        """w / sd, made once: fewer numpy calls per margin (a one-lead request pays per call,
        not per value).
        The mean is still subtracted before scaling: a column constant in training can have
        an sd of 1e-16, and folding mu into the intercept would cancel two numbers of 1e15."""
        if self._w_over_sd is None:
            self._w_over_sd = self.w_num_ / self.sd_
        return self._w_over_sd

    def margin(self, X: np.ndarray) -> np.ndarray:
        """Log-odds. Each row is summed alone, in one fixed order (numpy's reduction along a
        row), never by a matrix product: BLAS sums a row in an order that depends on how many
        rows it is given, so a lead scored beside others (a batch, requests scored together)
        got a probability a few units in the last place away from its own."""
        out = np.empty(len(X))
        for a in range(0, len(X), _CHUNK):  # bounded temporaries on a big matrix
            out[a:a + _CHUNK] = self._margin(X[a:a + _CHUNK])
        return out

    def _margin(self, X: np.ndarray) -> np.ndarray:
        # rows in C order: columns picked by fancy indexing come out in Fortran order, and
        # numpy sums a Fortran array's rows column by column (sequentially), one row alone
        # pairwise: the same lead's sum would differ with the rows beside it
        num = np.ascontiguousarray(X[:, self.numeric_])
        miss = np.isnan(num)
        terms = ((_slog(np.where(miss, self.median_, num)) - self.mu_) * self._scale()
                 + miss * self.w_miss_)
        out = terms.sum(axis=1) + self.intercept_
        if len(self.categorical_):
            flat, offset, last = self._category_table()
            codes = np.ascontiguousarray(X[:, self.categorical_])
            out += flat[np.where(np.isnan(codes), last, codes + offset).astype("int64")].sum(
                axis=1)
        return out

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """(n, features + 1): centred terms, then the bias; each row sums to its margin."""
        terms = self._terms(X) - self.term_mean_
        bias = self.intercept_ + float(self.term_mean_.sum())
        return np.column_stack([terms, np.full(len(X), bias)])

    # --- files --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"C": self.C, "numeric": self.numeric_.tolist(),
                "categorical": self.categorical_.tolist(), "levels": self.levels_,
                "median": self.median_.tolist(), "mu": self.mu_.tolist(), "sd": self.sd_.tolist(),
                "w_num": self.w_num_.tolist(), "w_miss": self.w_miss_.tolist(),
                "w_cat": [w.tolist() for w in self.w_cat_], "intercept": self.intercept_,
                "term_mean": self.term_mean_.tolist()}

    @classmethod
    def from_dict(cls, columns: Sequence[Column], data: dict[str, Any]) -> LinearScorer:
        self = cls(columns, C=data["C"])
        self.numeric_ = np.asarray(data["numeric"], dtype="int64")
        self.categorical_ = np.asarray(data["categorical"], dtype="int64")
        self.levels_ = list(data["levels"])
        for key in ("median", "mu", "sd", "w_num", "w_miss", "term_mean"):
            setattr(self, f"{key}_", np.asarray(data[key], dtype="float64"))
        self.w_cat_ = [np.asarray(w, dtype="float64") for w in data["w_cat"]]
        self.intercept_ = float(data["intercept"])
        return self
