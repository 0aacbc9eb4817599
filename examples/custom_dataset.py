"""A user-defined dataset: a function returning a ``recourse_ray.data.Dataset``.

    datasets:
      spirals: {preset: "examples.custom_dataset:spirals", noise: 0.3}
"""

from __future__ import annotations

import numpy as np

from recourse_ray.data import Dataset


def spirals(*, seed, n_samples: int | None = None, noise: float = 0.2) -> Dataset:
    """Two interleaved spirals in 2-D, one per class (balanced).

    Args:
        seed: int or numpy Generator; all randomness flows through it.
        n_samples: total points (default 600).
        noise: standard deviation of Gaussian noise on each coordinate.
    """
    rng = np.random.default_rng(seed)
    n = 600 if n_samples is None else int(n_samples)
    n0 = n // 2
    t = np.sqrt(rng.uniform(0.05, 1.0, size=n)) * 3 * np.pi
    sign = np.where(np.arange(n) < n0, 1.0, -1.0)
    X = np.c_[sign * t * np.cos(t), sign * t * np.sin(t)] / 3 + noise * rng.standard_normal((n, 2))
    y = (np.arange(n) >= n0).astype(np.int64)
    order = rng.permutation(n)
    return Dataset(X=X[order], y=y[order], feature_names=("x1", "x2"), name="spirals", source="examples: two spirals")
