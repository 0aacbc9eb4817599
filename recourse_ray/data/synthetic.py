"""Synthetic 2-D datasets of the study (SPEC §3), with scikit-learn-like signatures.

Each generator turns its keyword-only ``seed`` into one numpy Generator on its first
line; all randomness flows through it. Classes are balanced (``n_samples // 2`` each,
the odd row going to class 1).
"""

from __future__ import annotations

import numpy as np

from recourse_ray._config import check_int, check_real
from recourse_ray._rng import as_rng
from recourse_ray.data._dataset import Dataset

__all__ = ["blobs", "overlapping", "linearly_separable", "circles", "moons"]


def _raise_problems(*problems: str | None) -> None:
    """Raise one ValueError listing every problem found (None entries are checks that passed)."""
    found = [p for p in problems if p]
    if found:
        raise ValueError(" ".join(found))


def _shuffle(X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(len(y))
    return X[order], y[order]


def _class_sizes(n_samples: int) -> tuple[int, int]:
    n0 = n_samples // 2
    return n0, n_samples - n0


def blobs(
    n_samples: int = 1000,
    *,
    seed: int | np.random.Generator,
    std: float = 0.5,
    n_features: int = 2,
    center_box: tuple[float, float] = (-2.0, 2.0),
    name: str = "blobs",
) -> Dataset:
    """Two isotropic Gaussian blobs, one per class, centres uniform in ``center_box``^d.

    Args:
        n_samples: total number of points (balanced classes).
        seed: int or numpy Generator.
        std: standard deviation of each blob.
        n_features: dimension of the feature space.
        center_box: (low, high) bounds of the uniformly drawn centres.
        name: the name recorded in the returned Dataset.

    Returns:
        Dataset with X (n_samples, n_features) float32 and y (n_samples,).
    """
    rng = as_rng(seed)
    _raise_problems(
        check_int(n_samples, "n_samples", "blobs", 2),
        check_real(std, "std", "blobs", 0),
        check_int(n_features, "n_features", "blobs", 1),
    )
    n_samples, std = int(n_samples), float(std)
    low, high = center_box
    centres = rng.uniform(low, high, size=(2, n_features))
    sizes = _class_sizes(n_samples)
    X = np.concatenate([centres[c] + std * rng.standard_normal((sizes[c], n_features)) for c in (0, 1)])
    y = np.repeat([0, 1], sizes)
    X, y = _shuffle(X, y, rng)
    names = tuple(f"x{i + 1}" for i in range(n_features))
    return Dataset(X=X, y=y, feature_names=names, name=name, source=f"synthetic: Gaussian blobs, std {std}")


def overlapping(n_samples: int = 1000, *, seed: int | np.random.Generator) -> Dataset:
    """The study's ``overlapping`` set: 2-D blobs with std 0.5 (SPEC §3)."""
    return blobs(n_samples, seed=seed, std=0.5, name="overlapping")


def linearly_separable(n_samples: int = 1000, *, seed: int | np.random.Generator) -> Dataset:
    """The study's ``linearly_separable`` set: 2-D blobs with std 0.1 (SPEC §3)."""
    return blobs(n_samples, seed=seed, std=0.1, name="linearly_separable")


def circles(
    n_samples: int = 1000, *, seed: int | np.random.Generator, noise: float = 0.15, factor: float = 0.01
) -> Dataset:
    """Two concentric circles: class 0 the outer (radius 1), class 1 the inner (radius ``factor``).

    Args:
        noise: standard deviation of the Gaussian noise added to every coordinate.
        factor: inner radius relative to the outer one, in [0, 1).
    """
    rng = as_rng(seed)
    _raise_problems(
        check_int(n_samples, "n_samples", "circles", 2),
        check_real(noise, "noise", "circles", 0),
        check_real(factor, "factor", "circles", 0, 1, high_open=True),
    )
    n_samples, noise = int(n_samples), float(noise)
    n_out, n_in = _class_sizes(n_samples)
    t_out = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
    t_in = np.linspace(0, 2 * np.pi, n_in, endpoint=False)
    X = np.concatenate(
        [np.c_[np.cos(t_out), np.sin(t_out)], factor * np.c_[np.cos(t_in), np.sin(t_in)]]
    ) + noise * rng.standard_normal((n_samples, 2))
    y = np.repeat([0, 1], [n_out, n_in])
    X, y = _shuffle(X, y, rng)
    return Dataset(X=X, y=y, feature_names=("x1", "x2"), name="circles", source=f"synthetic: circles, noise {noise}")


def moons(n_samples: int = 1000, *, seed: int | np.random.Generator, noise: float = 0.1) -> Dataset:
    """Two interleaving half circles (class 0 the upper moon, class 1 the lower one).

    Args:
        noise: standard deviation of the Gaussian noise added to every coordinate.
    """
    rng = as_rng(seed)
    _raise_problems(check_int(n_samples, "n_samples", "moons", 2), check_real(noise, "noise", "moons", 0))
    n_samples, noise = int(n_samples), float(noise)
    n_up, n_down = _class_sizes(n_samples)
    t_up = np.linspace(0, np.pi, n_up)
    t_down = np.linspace(0, np.pi, n_down)
    upper = np.c_[np.cos(t_up), np.sin(t_up)]
    lower = np.c_[1 - np.cos(t_down), 0.5 - np.sin(t_down)]
    X = np.concatenate([upper, lower]) + noise * rng.standard_normal((n_samples, 2))
    y = np.repeat([0, 1], [n_up, n_down])
    X, y = _shuffle(X, y, rng)
    return Dataset(X=X, y=y, feature_names=("x1", "x2"), name="moons", source=f"synthetic: moons, noise {noise}")
