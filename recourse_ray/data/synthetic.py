"""Synthetic 2-D datasets of the study (SPEC §3): generators and the published copies.

**Generated.** ``blobs``, ``overlapping``, ``linearly_separable``, ``circles`` and
``moons`` follow the generators the study drew its data with, MLJBase.jl's
``make_blobs`` / ``make_circles`` / ``make_moons``: random centres in a box, random
angles on the circles and half circles, MLJ's offsets and Gaussian noise, and the
*outer* ring as the target class of ``circles``. They cannot reproduce the study's draw
(Julia's MersenneTwister); the published one is below. Each generator turns its
keyword-only ``seed`` into one numpy Generator on its first line; all randomness flows
through it. Classes are balanced (``n_samples // 2`` of class 0, the rest, one more
for an odd ``n_samples``, of class 1).

**Published.** ``published(name, ...)`` reads the study's own draw, the CSVs released
with the paper (``PUBLISHED_FILES``), from the data directory; they are registered as
``study_overlapping``, ``study_linearly_separable``, ``study_circles`` and
``study_moons``. ``recourse_ray.data.sources`` downloads and verifies the files.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recourse_ray._config import check_int, check_real
from recourse_ray._registry import suggest
from recourse_ray._rng import as_rng
from recourse_ray.data._dataset import Dataset, check_options

__all__ = [
    "blobs",
    "overlapping",
    "linearly_separable",
    "circles",
    "moons",
    "published",
    "PUBLISHED_FILES",
    "PUBLISHED_REPOSITORY",
    "PUBLISHED_COMMIT",
    "PUBLISHED_PATH",
]

#: The paper's repository, the commit and the folder the published CSVs come from.
PUBLISHED_REPOSITORY = "pat-alt/endogenous-macrodynamics-in-algorithmic-recourse"
PUBLISHED_COMMIT = "0df3f498320ae3621c0d4efb9f278b10523c5cd8"  # 0df3f49, 2022-12-22
PUBLISHED_PATH = "dev/artifacts/upload/data/synthetic"

#: Registered name of each published set -> its file in the data directory (the
#: repository's own file names, so a copy of that folder works as a data directory).
PUBLISHED_FILES: dict[str, str] = {
    "study_overlapping": "overlapping.csv",
    "study_linearly_separable": "linearly_separable.csv",
    "study_circles": "circles.csv",
    "study_moons": "moons.csv",
}


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


def _check_center_box(center_box: object) -> str | None:
    try:
        low, high = center_box  # type: ignore[misc]
        ok = all(check_real(v, "center_box", "blobs") is None for v in (low, high)) and low < high
    except (TypeError, ValueError):
        ok = False
    if ok:
        return None
    return f"The 'center_box' parameter of blobs must be a pair (low, high) of finite floats with low < high. Got {center_box!r} instead."


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

    MLJBase's ``make_blobs(n, d; centers=2, cluster_std=std, center_box=low => high)``:
    the two centres are drawn uniformly in the box, then every point is its centre plus
    ``std`` times a standard normal vector.

    Args:
        n_samples: total number of points (balanced classes).
        seed: int or numpy Generator.
        std: standard deviation of each blob, > 0.
        n_features: dimension of the feature space.
        center_box: (low, high) bounds of the uniformly drawn centres, low < high.
        name: the name recorded in the returned Dataset.

    Returns:
        Dataset with X (n_samples, n_features) float32 and y (n_samples,).
    """
    rng = as_rng(seed)
    _raise_problems(
        check_int(n_samples, "n_samples", "blobs", 2),
        check_real(std, "std", "blobs", 0, low_open=True),
        check_int(n_features, "n_features", "blobs", 1),
        _check_center_box(center_box),
    )
    n_samples, std, n_features = int(n_samples), float(std), int(n_features)
    low, high = (float(v) for v in center_box)
    centres = rng.uniform(low, high, size=(2, n_features))
    y = np.repeat([0, 1], _class_sizes(n_samples))
    X = centres[y] + std * rng.standard_normal((n_samples, n_features))
    X, y = _shuffle(X, y, rng)
    names = tuple(f"x{i + 1}" for i in range(n_features))
    return Dataset(
        X=X, y=y, feature_names=names, name=name,
        source=f"synthetic: Gaussian blobs (MLJ make_blobs), std {std}, centres uniform in [{low}, {high}]^{n_features}",
    )


def overlapping(n_samples: int = 1000, *, seed: int | np.random.Generator) -> Dataset:
    """The study's ``overlapping`` set: 2-D blobs with std 0.5, centres uniform in [-2, 2]^2 (SPEC §3)."""
    return blobs(n_samples, seed=seed, std=0.5, name="overlapping")


def linearly_separable(n_samples: int = 1000, *, seed: int | np.random.Generator) -> Dataset:
    """The study's ``linearly_separable`` set: 2-D blobs with std 0.1, centres uniform in [-2, 2]^2 (SPEC §3)."""
    return blobs(n_samples, seed=seed, std=0.1, name="linearly_separable")


def circles(
    n_samples: int = 1000, *, seed: int | np.random.Generator, noise: float = 0.15, factor: float = 0.01
) -> Dataset:
    """Two concentric circles: class 0 the inner (radius ``factor``), class 1 the outer (radius 1).

    MLJBase's ``make_circles(n; noise, factor)``: every point gets an angle uniform in
    [0, 2 pi); the class-0 points lie on the circle of radius ``factor``, the class-1
    points on the unit circle; then Gaussian noise. The outer ring is the target class,
    as in the study's data.

    Args:
        n_samples: total number of points (balanced classes).
        seed: int or numpy Generator.
        noise: standard deviation of the Gaussian noise added to every coordinate.
        factor: inner radius relative to the outer one, in (0, 1).

    Returns:
        Dataset with X (n_samples, 2) float32 and y (n_samples,).
    """
    rng = as_rng(seed)
    _raise_problems(
        check_int(n_samples, "n_samples", "circles", 2),
        check_real(noise, "noise", "circles", 0),
        check_real(factor, "factor", "circles", 0, 1, low_open=True, high_open=True),
    )
    n_samples, noise, factor = int(n_samples), float(noise), float(factor)
    angle = rng.uniform(0.0, 2 * np.pi, n_samples)
    y = np.repeat([0, 1], _class_sizes(n_samples))
    radius = np.where(y == 1, 1.0, factor)
    X = radius[:, None] * np.c_[np.cos(angle), np.sin(angle)]
    if noise > 0:
        X = X + noise * rng.standard_normal((n_samples, 2))
    X, y = _shuffle(X, y, rng)
    return Dataset(
        X=X, y=y, feature_names=("x1", "x2"), name="circles",
        source=f"synthetic: circles (MLJ make_circles), noise {noise}, factor {factor}; target = outer ring",
    )


def moons(
    n_samples: int = 1000,
    *,
    seed: int | np.random.Generator,
    noise: float = 0.1,
    xshift: float = 1.0,
    yshift: float = 0.3,
) -> Dataset:
    """Two interleaving half circles: class 0 the upper moon, class 1 the lower, shifted one.

    MLJBase's ``make_moons(n; noise, xshift, yshift)``: every point gets an angle ``t``
    uniform in [0, pi); class 0 lies at ``(cos t, sin t)``, class 1 at
    ``(cos t + xshift, yshift - sin t)``; then Gaussian noise. (For an odd ``n_samples``
    MLJ labels one upper-moon point 1; here the extra point is a lower-moon point, so
    every class is one moon.)

    Args:
        n_samples: total number of points (balanced classes).
        seed: int or numpy Generator.
        noise: standard deviation of the Gaussian noise added to every coordinate.
        xshift: horizontal offset of the lower moon's centre.
        yshift: vertical offset of the lower moon's centre.

    Returns:
        Dataset with X (n_samples, 2) float32 and y (n_samples,).
    """
    rng = as_rng(seed)
    _raise_problems(
        check_int(n_samples, "n_samples", "moons", 2),
        check_real(noise, "noise", "moons", 0),
        check_real(xshift, "xshift", "moons"),
        check_real(yshift, "yshift", "moons"),
    )
    n_samples, noise = int(n_samples), float(noise)
    angle = rng.uniform(0.0, np.pi, n_samples)
    y = np.repeat([0, 1], _class_sizes(n_samples))
    lower = y == 1
    X = np.c_[np.cos(angle), np.where(lower, -1.0, 1.0) * np.sin(angle)]
    X[lower] += [float(xshift), float(yshift)]
    if noise > 0:
        X = X + noise * rng.standard_normal((n_samples, 2))
    X, y = _shuffle(X, y, rng)
    return Dataset(
        X=X, y=y, feature_names=("x1", "x2"), name="moons",
        source=f"synthetic: moons (MLJ make_moons), noise {noise}, shift ({float(xshift)}, {float(yshift)})",
    )


# ---------------------------------------------------------------------------------------
# The study's published draw (files in the data directory; see recourse_ray.data.sources)

_PUBLISHED_OPTIONS = ("name", "balance", "standardize", "split_column", "source")


def published(
    name: str, *, seed: int | np.random.Generator, n_samples: int | None = None, **options: Any
) -> Dataset:
    """One of the study's published 2-D sets, read from the data directory, in raw units.

    ``x1, x2`` are the features and ``target`` the label (1 = the favourable class; the
    outer ring of ``circles``). 1,000 rows, 500 per class; all of them by default.
    The features are **not** z-scored (``standardize=False``), as in the study.

    Args:
        name: a key of :data:`PUBLISHED_FILES` (``study_overlapping``, ...).
        seed: drives the subsample when ``n_samples`` is smaller than the file.
        n_samples: rows to return (``n_samples // 2`` of class 0, the rest of class 1);
            None for all.
        **options: ``load_csv`` settings to override (``balance``, ``standardize``,
            ``split_column``, ``name``, ``source``).

    Raises:
        KeyError: an unknown published name (with the closest match).
        ValueError: the file is not in the data directory (the message names the
            ``recourse-ray datasets fetch`` command), or does not load.
    """
    from recourse_ray import data as _data
    from recourse_ray.data import tabular

    if name not in PUBLISHED_FILES:
        raise KeyError(
            f"Unknown published dataset {name!r}.{suggest(str(name), sorted(PUBLISHED_FILES))} "
            f"Valid names: {', '.join(PUBLISHED_FILES)}."
        )
    check_options(name, options, _PUBLISHED_OPTIONS, "seed, n_samples")
    directory = _data.get_data_dir()
    path = directory / PUBLISHED_FILES[name]
    if not path.is_file():
        raise ValueError(
            f"The dataset {name!r} (the study's published {PUBLISHED_FILES[name]}) is not in the data directory "
            f"{directory}. Get it with `recourse-ray datasets fetch {name}` (`recourse-ray datasets fetch study` "
            "gets all four), or point RECOURSE_RAY_DATA at a folder that holds it (see docs/data.md)."
        )
    settings = {
        "name": name,
        "standardize": False,
        "source": f"{PUBLISHED_FILES[name]} (the study's published data, {PUBLISHED_REPOSITORY}@{PUBLISHED_COMMIT})",
        **options,
    }
    return tabular.load_csv(path, target="target", seed=seed, n_samples=n_samples, **settings)
