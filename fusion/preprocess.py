"""Per-fold feature preprocessing, fitted on the training fold only: impute, filter, scale, PCA.

Every statistic (medians, variances, means, scales, principal axes) comes from the training
rows, so the validation fold never leaks into the model (see tests/fusion/test_experiment_leakage.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA

from fusion.errors import FusionDataError


@dataclass
class FoldPreprocessor:
    """Median imputation, top-``max_features`` variance filter, z-scoring and optional PCA to ``n_components``.

    ``n_components`` None or 0 keeps the (filtered, z-scored) features; PCA scores are
    rescaled to unit variance on the training rows.
    """

    max_features: int | None = 2000
    n_components: int | None = 16
    seed: int = 0

    def fit(self, x_train: np.ndarray) -> "FoldPreprocessor":
        """Learn the statistics from the training rows ``x_train`` [n, d]."""
        x = np.asarray(x_train, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise FusionDataError(f"FoldPreprocessor.fit: need >= 2 training rows [n, d], got shape {x.shape}")
        med = np.nanmedian(x, axis=0)
        self.median_ = np.where(np.isfinite(med), med, 0.0)
        x = np.where(np.isnan(x), self.median_, x)
        var = x.var(axis=0)
        order = np.argsort(-var, kind="stable")
        keep = order[var[order] > 1e-12]
        if self.max_features:
            keep = keep[: self.max_features]
        if keep.size == 0:
            keep = order[:1]
        self.columns_ = np.sort(keep)
        xs = x[:, self.columns_]
        self.mean_ = xs.mean(axis=0)
        sd = xs.std(axis=0)
        self.scale_ = np.where(sd > 1e-12, sd, 1.0)
        z = (xs - self.mean_) / self.scale_
        self.pca_ = None
        k = min(self.n_components or 0, z.shape[0] - 1, z.shape[1])
        if self.n_components and k >= 1 and k < z.shape[1]:
            self.pca_ = PCA(n_components=k, random_state=self.seed).fit(z)
            scores = self.pca_.transform(z)
            sd = scores.std(axis=0)
            self.pca_scale_ = np.where(sd > 1e-12, sd, 1.0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Preprocessed rows [n, k] (float32) with the training statistics."""
        x = np.asarray(x, dtype=np.float64)
        x = np.where(np.isnan(x), self.median_, x)
        z = (x[:, self.columns_] - self.mean_) / self.scale_
        if self.pca_ is not None:
            z = self.pca_.transform(z) / self.pca_scale_
        return z.astype(np.float32)

    @property
    def n_out(self) -> int:
        """Number of output features."""
        return int(self.pca_.n_components_) if self.pca_ is not None else int(self.columns_.size)
