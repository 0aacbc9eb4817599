"""Datasets: the ``Dataset`` type, synthetic generators, tabular loaders and the name registry.

``load(name, seed=..., n_samples=..., **options)`` is how the simulation and sweep files
obtain data; ``names()`` lists what can be loaded; ``register(name)`` adds a loader
(a function ``(*, seed, n_samples=None, **options) -> Dataset``).

Generated synthetic sets (``overlapping``, ``circles``, ...) need no files. The study's
published synthetic sets (``study_overlapping``, ...) and the real-world CSVs are read
from ``get_data_dir()``; change it with ``set_data_dir(path)``, or for a block of code
with ``with data_dir(path): ...``. ``recourse_ray.data.sources`` puts the files there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from recourse_ray._registry import Registry
from recourse_ray.data import synthetic
from recourse_ray.data._dataset import Dataset, Standardizer

__all__ = [
    "Dataset",
    "Standardizer",
    "DATASETS",
    "register",
    "load",
    "names",
    "get_data_dir",
    "set_data_dir",
    "data_dir",
    "synthetic",
    "tabular",
    "sources",
]

Loader = Callable[..., Dataset]
DATASETS: Registry[Loader] = Registry("dataset")
_data_dir_override: Path | None = None


def register(name: str, loader: Loader | None = None):
    """Register a dataset loader ``(*, seed, n_samples=None, **options) -> Dataset`` under ``name``."""
    return DATASETS.register(name, loader)


def names() -> list[str]:
    """Names of all registered datasets."""
    return DATASETS.names()


def load(name: str, /, *, seed: int | np.random.Generator, n_samples: int | None = None, **options) -> Dataset:
    """Load the dataset registered under ``name``.

    Args:
        name: a registered name (see ``names()``).
        seed: drives generation (synthetic) or subsampling (tabular).
        n_samples: number of rows; the loader's default (1,000 synthetic, all balanced
            rows for tabular) when None.
        **options: loader-specific options (e.g. ``noise`` for ``moons``).
    """
    loader = DATASETS.get(name)  # a registered name, or an import path "package.module:loader"
    if n_samples is not None:
        options["n_samples"] = n_samples
    dataset = loader(seed=seed, **options)
    if not isinstance(dataset, Dataset):
        raise TypeError(f"The dataset loader {name!r} must return a recourse_ray.data.Dataset. Got {type(dataset).__name__} instead.")
    return dataset


def set_data_dir(path: str | os.PathLike | None) -> None:
    """Set the directory holding the data files (overrides ``RECOURSE_RAY_DATA``); None undoes it."""
    global _data_dir_override
    _data_dir_override = None if path is None else Path(path)


def get_data_dir() -> Path:
    """The directory searched for data files (tabular CSVs, the published synthetic sets).

    Order: ``set_data_dir`` (or an enclosing ``data_dir(path)`` block), the
    ``RECOURSE_RAY_DATA`` environment variable, then ``~/.cache/recourse_ray/data``.
    """
    if _data_dir_override is not None:
        return _data_dir_override
    env = os.environ.get("RECOURSE_RAY_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "recourse_ray" / "data"


@contextmanager
def data_dir(path: str | os.PathLike | None) -> Iterator[Path]:
    """Use ``path`` as the data directory inside a ``with`` block, then restore the previous setting.

    ``with data_dir(tmp): load("gmsc", seed=0)``. ``None`` means the environment variable
    or the default for the block. Yields the directory in effect (``get_data_dir()``).
    """
    previous = _data_dir_override
    set_data_dir(path)
    try:
        yield get_data_dir()
    finally:
        set_data_dir(previous)


def _synthetic_loader(fn: Callable[..., Dataset]) -> Loader:
    def loader(*, seed, n_samples: int | None = None, **options) -> Dataset:
        return fn(1000 if n_samples is None else n_samples, seed=seed, **options)

    loader.__doc__ = fn.__doc__
    loader.__name__ = fn.__name__
    return loader


def _published_loader(name: str) -> Loader:
    def loader(*, seed, n_samples: int | None = None, **options) -> Dataset:
        return synthetic.published(name, seed=seed, n_samples=n_samples, **options)

    file_name = synthetic.PUBLISHED_FILES[name]
    loader.__doc__ = (
        f"The study's published {file_name} (x1, x2, target; 1,000 rows, raw units), read from the data directory.\n\n"
        f"Get the file with `recourse-ray datasets fetch {name}`. See recourse_ray.data.synthetic.published."
    )
    loader.__name__ = name
    return loader


for _name in ("overlapping", "linearly_separable", "circles", "moons", "blobs"):
    register(_name, _synthetic_loader(getattr(synthetic, _name)))
for _name in synthetic.PUBLISHED_FILES:
    register(_name, _published_loader(_name))

from recourse_ray.data import tabular  # noqa: E402  (registers the tabular loaders)
from recourse_ray.data import sources  # noqa: E402  (where the tabular files come from)
