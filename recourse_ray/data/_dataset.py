"""The ``Dataset`` type: features, binary labels and the metadata the simulation needs.

Loaders (``synthetic.py``, ``tabular.py``) produce a ``Dataset``; the simulation splits it
into train/test with :meth:`Dataset.split`, which also standardises the continuous
columns with statistics fitted on the training rows only. A dataset may carry a given
split (``given_test``, e.g. a CSV's ``split`` column), which ``split`` then honours as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from recourse_ray._config import check_real
from recourse_ray._registry import suggest
from recourse_ray._rng import as_rng
from recourse_ray.constraints import Constraints

__all__ = ["Dataset", "Standardizer"]


@dataclass(frozen=True, kw_only=True)
class Standardizer:
    """Per-column z-scoring fitted on training rows.

    Attributes:
        mean: (n_features,) float32; 0 for columns that are not standardised.
        scale: (n_features,) float32; 1 for columns that are not standardised.
    """

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray, columns: np.ndarray) -> "Standardizer":
        """Fit on ``X`` (n, d) for the columns where ``columns`` (d,) bool is True."""
        X = np.asarray(X, dtype=np.float64)
        mean = np.where(columns, X.mean(axis=0), 0.0)
        std = X.std(axis=0)
        # A constant column would divide by zero; leave it centred but unscaled.
        scale = np.where(columns & (std > 0), std, 1.0)
        return cls(mean=mean.astype(np.float32), scale=scale.astype(np.float32))

    def transform(self, X: np.ndarray) -> np.ndarray:
        return ((np.asarray(X, dtype=np.float32) - self.mean) / self.scale).astype(np.float32)

    def inverse_transform(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, dtype=np.float32) * self.scale + self.mean).astype(np.float32)


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """A binary classification dataset.

    Attributes:
        X: (n_samples, n_features) float32 features.
        y: (n_samples,) int64 labels in {0, 1}; 1 is the favourable (target) class.
        feature_names: one name per column.
        name: the dataset's name (the registry name for built-in datasets).
        continuous: (n_features,) bool; True for columns that ``split`` standardises.
        standardize: whether ``split`` z-scores the continuous columns by default
            (True for tabular data, False for the synthetic 2-D sets, as in the study).
        source: a short human-readable provenance string.
        given_test: (n_samples,) bool or None; a given train/test assignment (True marks
            a test row), which ``split`` uses instead of drawing one. None (the default):
            ``split`` draws a stratified random split.
        standardizer: the z-scoring fitted by ``split`` (None before splitting or when
            not standardised).
        one_hot_groups: the one-hot groups of the columns, each a tuple of feature names
            (one categorical column encoded one-hot; ``load_csv`` declares one per
            ``categorical`` column). Searches keep them one-hot unless the constraints
            say otherwise (``recourse_ray.constraints``). Default: none.
        constraints: the actionability constraints of this dataset's counterfactuals
            (:class:`~recourse_ray.constraints.Constraints`); None: none declared (the
            one-hot groups still apply).
    """

    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    name: str
    continuous: np.ndarray | None = None
    standardize: bool = False
    source: str = ""
    given_test: np.ndarray | None = field(default=None, compare=False)
    standardizer: Standardizer | None = field(default=None, compare=False)
    one_hot_groups: tuple[tuple[str, ...], ...] = ()
    constraints: Constraints | None = None

    def __post_init__(self) -> None:
        X = np.ascontiguousarray(self.X, dtype=np.float32)
        y = np.asarray(self.y)
        problems = []
        if X.ndim != 2:
            problems.append(f"X must be 2-D (n_samples, n_features); got shape {X.shape}")
        if y.ndim != 1 or (X.ndim == 2 and y.shape[0] != X.shape[0]):
            problems.append(f"y must be 1-D with one label per row of X; got shape {y.shape} for X {X.shape}")
        if y.size and not np.isin(y, (0, 1)).all():
            problems.append(f"y must contain only 0 and 1; got values {np.unique(y)[:10].tolist()}")
        if X.ndim == 2 and len(self.feature_names) != X.shape[1]:
            problems.append(f"feature_names has {len(self.feature_names)} names for {X.shape[1]} columns")
        if X.size and not np.isfinite(X).all():
            problems.append("X contains NaN or infinite values")
        given_test = None if self.given_test is None else np.asarray(self.given_test)
        if given_test is not None and (given_test.dtype != bool or given_test.shape != y.shape):
            problems.append(
                f"given_test must be a bool array with one entry per row; got {given_test.dtype} of shape {given_test.shape}"
            )
        groups = tuple(tuple(str(c) for c in g) for g in self.one_hot_groups)
        unknown = sorted({c for g in groups for c in g} - set(self.feature_names))
        if unknown:
            problems.append(f"one_hot_groups names columns that are not features: {', '.join(map(repr, unknown[:10]))}")
        if self.constraints is not None and not isinstance(self.constraints, Constraints):
            problems.append(f"constraints must be a Constraints or None; got {type(self.constraints).__name__}")
        if problems:
            raise ValueError(f"Invalid dataset {self.name!r}: " + "; ".join(problems) + ".")
        object.__setattr__(self, "one_hot_groups", groups)
        continuous = (
            np.ones(X.shape[1], dtype=bool) if self.continuous is None else np.asarray(self.continuous, dtype=bool)
        )
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", y.astype(np.int64))
        object.__setattr__(self, "feature_names", tuple(self.feature_names))
        object.__setattr__(self, "continuous", continuous)
        object.__setattr__(self, "given_test", given_test)

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    def class_counts(self) -> tuple[int, int]:
        """(number of label-0 rows, number of label-1 rows)."""
        n1 = int(self.y.sum())
        return self.n_samples - n1, n1

    def subset(self, index: np.ndarray) -> "Dataset":
        """The rows selected by ``index`` (integer or boolean array), with their part of ``given_test``."""
        given_test = None if self.given_test is None else self.given_test[index]
        return replace(self, X=self.X[index], y=self.y[index], given_test=given_test)

    def with_data(self, X: np.ndarray, y: np.ndarray) -> "Dataset":
        """A copy with new features and labels and the same metadata."""
        return replace(self, X=X, y=y)

    def split(
        self,
        test_size: float = 0.2,
        *,
        seed: int | np.random.Generator,
        standardize: bool | None = None,
    ) -> tuple["Dataset", "Dataset"]:
        """Train/test split: the given one (``given_test``), else a stratified random one.

        With a given split, its training and test rows are returned as they are, in
        their order; ``test_size`` and ``seed`` are then not used (``test_size`` is
        still checked). Otherwise each class is shuffled and ``round(test_size *
        n_class)`` of its rows go to the test split, so both splits keep the class
        balance; the rows of each split keep their order.

        Args:
            test_size: share of rows in the test split, in (0, 1).
            seed: int or numpy Generator driving the shuffle.
            standardize: z-score the continuous columns with statistics of the training
                split (applied to both splits); defaults to ``self.standardize``.

        Returns:
            (train, test), without ``given_test``; when standardised, both carry the
            fitted ``standardizer``.

        Raises:
            ValueError: a ``test_size`` outside (0, 1), or a given split without
                training or test rows.
        """
        problem = check_real(test_size, "test_size", "Dataset.split", 0, 1, low_open=True, high_open=True)
        if problem:
            raise ValueError(problem)
        rng = as_rng(seed)
        if self.given_test is None:
            train_rows, test_rows = self._stratified_rows(test_size, rng)
        else:
            train_rows, test_rows = np.flatnonzero(~self.given_test), np.flatnonzero(self.given_test)
            if not (train_rows.size and test_rows.size):
                raise ValueError(
                    f"The given split of dataset {self.name!r} has {train_rows.size} training and {test_rows.size} "
                    "test rows; both must be non-empty."
                )
        train = replace(self.subset(train_rows), given_test=None)
        test = replace(self.subset(test_rows), given_test=None)
        if self.standardize if standardize is None else standardize:
            scaler = Standardizer.fit(train.X, self.continuous)
            train = replace(train, X=scaler.transform(train.X), standardizer=scaler)
            test = replace(test, X=scaler.transform(test.X), standardizer=scaler)
        return train, test

    def _stratified_rows(self, test_size: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(training rows, test rows), each sorted: ``round(test_size * n_class)`` test rows per class."""
        train_idx, test_idx = [], []
        for label in (0, 1):
            rows = np.flatnonzero(self.y == label)
            rows = rows[rng.permutation(rows.size)]
            n_test = int(round(test_size * rows.size))
            test_idx.append(rows[:n_test])
            train_idx.append(rows[n_test:])
        return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))

    def __repr__(self) -> str:
        n0, n1 = self.class_counts()
        return f"Dataset(name={self.name!r}, n_samples={self.n_samples}, n_features={self.n_features}, classes=({n0}, {n1}))"


def check_options(dataset: str, options, valid, arguments: str) -> None:
    """Refuse the options a loader does not take, each with its closest valid name.

    Args:
        dataset: the dataset's name, for the message. options: the options given.
        valid: the option names the loader takes. arguments: its own arguments, listed
            first in the message (``"seed, n_samples"``).

    Raises:
        TypeError: naming every unknown option.
    """
    unknown = [key for key in options if key not in valid]
    if unknown:
        hints = "".join(suggest(key, list(valid)) for key in unknown)
        raise TypeError(
            f"Unknown option(s) {', '.join(map(repr, unknown))} for dataset {dataset!r}.{hints} "
            f"Valid options: {arguments}, {', '.join(valid)}."
        )
