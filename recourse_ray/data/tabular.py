"""Tabular datasets: CSV loading with the study's preprocessing, and the named real-world loaders.

Sits between the files on disk and :class:`~recourse_ray.data.Dataset`. ``load_csv``
applies the preprocessing of Altmeyer et al. (SaTML 2023) to any CSV with a target
column: binarise/flip the target, drop columns, drop rows with missing values, one-hot
encode categorical columns, undersample to balanced classes and draw a random subsample.
Z-scoring is *not* done here: the returned Dataset has ``standardize=True`` (unless
``standardize=False``) and :meth:`Dataset.split` fits the statistics on the training rows
only. A ``split_column`` of ``train`` / ``test`` values is carried as the Dataset's
``given_test``, which :meth:`Dataset.split` then uses as is (reference-compatible runs).

The named loaders (``california_housing``, ``credit_default``, ``gmsc``,
``german_credit``) read their file from :func:`recourse_ray.data.get_data_dir`; the ``csv``
loader reads a user file (``load("csv", path=..., target=..., seed=...)``).
"""

from __future__ import annotations

import csv as _csv
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # polars is imported where it is used: Ray workers never load it
    import polars as pl

from recourse_ray import data as _data
from recourse_ray._config import is_int, is_real, param_message, short_repr
from recourse_ray._registry import suggest
from recourse_ray._rng import as_rng
from recourse_ray.data._dataset import Dataset, check_options

__all__ = [
    "load_csv",
    "california_housing",
    "credit_default",
    "gmsc",
    "german_credit",
    "csv",
    "MISSING_VALUES",
    "SPLIT_VALUES",
    "FILES",
    "MAX_CSV_BYTES",
    "resolve_path",
]

logger = logging.getLogger(__name__)

#: Cell contents read as missing (the row is then dropped).
MISSING_VALUES: tuple[str, ...] = ("", "NA", "N/A", "NaN", "nan", "NULL", "null", "?")

#: The values a split column (``load_csv(split_column=...)``) may hold.
SPLIT_VALUES: tuple[str, ...] = ("train", "test")

#: The largest CSV file read (bytes). The whole file is read into memory (a few times
#: its size at the peak), so a bigger one is refused up front rather than exhausting it.
MAX_CSV_BYTES: int = 512 * 1024 * 1024

#: The longest header row read (bytes).
MAX_HEADER_BYTES: int = 1024 * 1024

#: File name of each named dataset inside the data directory.
FILES: dict[str, str] = {
    "california_housing": "california_housing.csv",
    "credit_default": "uci_credit_card_default.csv",
    "gmsc": "give_me_some_credit_balanced.csv",
    "german_credit": "german_credit.csv",
}


class _Problems(list):
    """Collects user-facing problems so that one error lists all of them."""

    def raise_if_any(self, name: str, path: Path) -> None:
        if self:
            raise ValueError(f"Cannot load dataset {name!r} from {path}: " + "; ".join(self) + ".")


def _names(value: str | Iterable[str] | None, param: str) -> tuple[str, ...]:
    """Normalise a column-name option (a single name or a sequence) to a tuple of str."""
    if value is None:
        return ()
    if isinstance(value, str) or is_int(value):
        return (str(value),)
    try:
        return tuple(str(v) for v in value)
    except TypeError:
        raise TypeError(
            param_message(param, "load_csv", "a column name or a sequence of column names", value)
        ) from None


def _missing_file_message(path: Path) -> str:
    return (
        f"Data file not found: {path}. The data directory is {_data.get_data_dir()}; set it with "
        "recourse_ray.data.set_data_dir(...) or the RECOURSE_RAY_DATA environment variable "
        "(see docs/data.md)."
    )


def _category_label(value: Any) -> str:
    """'2' for 2 or 2.0, 'red' for 'red': the part after '=' in a one-hot column name."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (np.integer, np.bool_)):
        return str(value.item())
    return str(value)


def _one_hot(values: np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """(n,) values -> ((n, n_categories) 0/1 matrix, sorted categories)."""
    categories, codes = np.unique(values, return_inverse=True)
    codes = codes.reshape(-1)
    onehot = np.zeros((values.shape[0], categories.shape[0]), dtype=np.float32)
    onehot[np.arange(values.shape[0]), codes] = 1.0
    return onehot, categories.tolist()


def _binarise_target(
    name: str,
    text: np.ndarray,
    numbers: np.ndarray | None,
    *,
    positive: Any,
    threshold: Any,
    problems: _Problems,
) -> np.ndarray | None:
    """The target column as 0/1 int64 (before ``flip``), or None after recording a problem.

    Args:
        name: the target column's name (for messages).
        text: (n,) the column's cells as str.
        numbers: (n,) float64 values when every cell is a number, else None.
    """
    if positive is not None and threshold is not None:
        problems.append("pass either 'positive' or 'threshold', not both")
        return None
    if threshold is not None:
        if not (is_real(threshold) or threshold == "median"):
            problems.append(param_message("threshold", "load_csv", "a number or 'median'", threshold))
            return None
        if numbers is None:
            problems.append(f"'threshold' needs a numeric target, but column {name!r} holds text")
            return None
        cut = float(np.median(numbers)) if threshold == "median" else float(threshold)
        return (numbers >= cut).astype(np.int64)
    if positive is not None:
        wanted = list(positive) if isinstance(positive, (list, tuple, set, frozenset)) else [positive]
        if numbers is not None:
            try:
                return np.isin(numbers, [float(v) for v in wanted]).astype(np.int64)
            except (TypeError, ValueError):
                pass  # e.g. positive="yes" for a numeric column: compare as text (and fail the class check)
        return np.isin(text, [str(v) for v in wanted]).astype(np.int64)
    # No rule given: the column must already hold 0/1 labels.
    if numbers is None or not np.isin(numbers, (0.0, 1.0)).all():
        shown = np.unique(text)
        problems.append(
            f"target column {name!r} must hold 0/1 labels, but has values {shown[:6].tolist()}"
            f"{' ...' if shown.size > 6 else ''}; pass positive=<value(s) meaning 1> or "
            "threshold=<number or 'median'> to binarise it"
        )
        return None
    return numbers.astype(np.int64)


def _resolve_path(path: str | os.PathLike) -> Path:
    """``path`` as given; a relative path that does not exist is also tried inside the data directory."""
    candidate = Path(path).expanduser()
    if not candidate.exists() and not candidate.is_absolute():
        in_data_dir = _data.get_data_dir() / candidate
        if in_data_dir.exists():
            return in_data_dir
    return candidate


resolve_path = _resolve_path


def _check_missing_values(value: object) -> list[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError(param_message("missing_values", "load_csv", "a list of strings (cell contents)", value))
    return list(value)


def _header_problems(file: Path) -> list[str]:
    """Problems of the header row: not UTF-8, empty, duplicate or over-long names (polars would rename them)."""
    with open(file, "rb") as f:
        line = f.readline(MAX_HEADER_BYTES + 1)
    if len(line) > MAX_HEADER_BYTES:
        return [f"the header row is longer than {MAX_HEADER_BYTES // 1024} KiB"]
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [f"the header row is not UTF-8 text (byte {exc.start})"]
    names = next(_csv.reader([text.rstrip("\r\n")]), [])
    problems = []
    empty = [i + 1 for i, n in enumerate(names) if not n.strip()]
    if empty:
        problems.append(f"empty column names in the header (column(s) {', '.join(map(str, empty[:10]))})")
    seen, duplicates = set(), []
    for n in names:
        if n in seen and n not in duplicates:
            duplicates.append(n)
        seen.add(n)
    if duplicates:
        problems.append(f"duplicate column names in the header: {', '.join(short_repr(n, 60) for n in duplicates[:10])}")
    return problems


def _check_n_samples(n_samples: object) -> int | None:
    if n_samples is None:
        return None
    if not (is_int(n_samples) and n_samples >= 2):
        raise ValueError(param_message("n_samples", "load_csv", "an int in the range [2, inf) or None", n_samples))
    return int(n_samples)


def _column_name(value: object, param: str, *, optional: bool = False) -> str | None:
    """A single column-name option (``target``, ``split_column``) as str; None stays None when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, str) or is_int(value):
        return str(value)
    expected = "a column name (str) or None" if optional else "a column name (str)"
    raise TypeError(param_message(param, "load_csv", expected, value))


def _read_frame(file: Path, name: str, missing_values: Sequence[str]) -> pl.DataFrame:
    """Every cell of ``file`` as text (None where missing); raises for a missing, empty or unparsable file."""
    import polars as pl
    if file.is_dir():
        raise ValueError(f"Cannot load dataset {name!r}: {file} is a directory, not a CSV file.")
    if not file.is_file():
        raise ValueError(f"Cannot load dataset {name!r}: {_missing_file_message(file)}")
    size = file.stat().st_size
    if size == 0:
        raise ValueError(f"Cannot load dataset {name!r} from {file}: the file is empty (no header, no rows).")
    if size > MAX_CSV_BYTES:
        raise ValueError(
            f"Cannot load dataset {name!r} from {file}: the file has {size} bytes, more than the limit of "
            f"{MAX_CSV_BYTES} (recourse_ray.data.tabular.MAX_CSV_BYTES); the whole file is read into memory, so "
            "subsample it first."
        )
    header = _header_problems(file)
    if header:
        raise ValueError(f"Cannot load dataset {name!r} from {file}: " + "; ".join(header) + ".")
    try:
        # Every cell is read as text and converted below: full-file schema inference is
        # slow, and per-column inference from a prefix fails on values like "1e+05".
        return pl.read_csv(file, null_values=list(missing_values), infer_schema=False)
    except pl.exceptions.NoDataError:
        raise ValueError(f"Cannot load dataset {name!r} from {file}: the file is empty (no header, no rows).") from None
    except (pl.exceptions.PolarsError, OSError) as err:
        raise ValueError(f"Cannot load dataset {name!r} from {file}: the file could not be parsed as CSV ({err}).") from None


def _check_columns(
    frame: pl.DataFrame,
    *,
    target: str,
    drop: tuple[str, ...],
    categorical: tuple[str, ...],
    split_column: str | None,
    problems: _Problems,
) -> None:
    """Record the problems with the named columns: absent, or given two roles."""
    columns = frame.columns
    if frame.height == 0:
        problems.append("the file has a header but no data rows")
    if target not in columns:
        problems.append(
            f"the target column {target!r} is not in the file.{suggest(target, columns)} "
            f"Available columns: {_some(columns, 30)}"
        )
    for param, wanted in (("drop", drop), ("categorical", categorical)):
        for col in wanted:
            if col not in columns:
                problems.append(f"the {param} column {col!r} is not in the file.{suggest(col, columns)}")
            elif col == target:
                problems.append(f"the target column {target!r} cannot also be a {param} column")
            elif col == split_column:
                problems.append(f"the split column {col!r} cannot also be a {param} column")
    if split_column is not None:
        if split_column not in columns:
            problems.append(f"the split column {split_column!r} is not in the file.{suggest(split_column, columns)}")
        elif split_column == target:
            problems.append(f"the target column {target!r} cannot also be the split column")


@dataclass(frozen=True)
class _Cells:
    """The table's cells, whitespace-trimmed, as text and as numbers.

    Attributes:
        text: every cell as str, None where missing.
        numbers: every cell as Float64, null where missing or not a number.
        is_numeric: per column, whether every non-missing cell is a number.
    """

    text: pl.DataFrame
    numbers: pl.DataFrame
    is_numeric: dict[str, bool]

    @classmethod
    def parse(cls, frame: pl.DataFrame) -> "_Cells":
        import polars as pl
        text = frame.with_columns(pl.all().str.strip_chars())
        numbers = text.select(pl.all().cast(pl.Float64, strict=False))
        is_numeric = {c: numbers[c].null_count() == text[c].null_count() for c in text.columns}
        return cls(text=text, numbers=numbers, is_numeric=is_numeric)

    def filter(self, keep: np.ndarray) -> "_Cells":
        """The rows where ``keep`` (n_rows,) bool is True."""
        import polars as pl
        mask = pl.Series(keep)
        return _Cells(text=self.text.filter(mask), numbers=self.numbers.filter(mask), is_numeric=self.is_numeric)

    def without(self, column: str) -> "_Cells":
        """The cells of every column but ``column``."""
        rest = {c: v for c, v in self.is_numeric.items() if c != column}
        return _Cells(text=self.text.drop(column), numbers=self.numbers.drop(column), is_numeric=rest)

    def values(self, column: str) -> np.ndarray:
        """(n_rows,) float64 for a numeric column, str otherwise."""
        if self.is_numeric[column]:
            return self.numbers[column].to_numpy()
        return self.text[column].to_numpy().astype(str)


def _check_numeric(cells: _Cells, features: list[str], categorical: tuple[str, ...], problems: _Problems) -> None:
    """Record the text columns that are not declared categorical, each with an example cell."""
    non_numeric = [c for c in features if c not in categorical and not cells.is_numeric[c]]
    if non_numeric:
        described = []
        for c in non_numeric:
            bad = cells.text[c].filter(cells.text[c].is_not_null() & cells.numbers[c].is_null())
            described.append(f"{c!r} (e.g. {bad[0]!r})")
        problems.append(
            f"non-numeric columns {', '.join(described)}: list them in 'categorical' to one-hot encode them, "
            "or in 'drop' to remove them"
        )


def _given_test_rows(cells: _Cells, split_column: str, problems: _Problems) -> np.ndarray | None:
    """(n_rows,) bool, True for the rows the split column marks ``test``; None after recording a problem."""
    import polars as pl
    column = cells.text[split_column]
    known = column.is_in(list(SPLIT_VALUES)).fill_null(False).to_numpy()
    if known.all():
        return (column == "test").to_numpy()
    bad = ["(missing)" if v is None else repr(v) for v in column.filter(pl.Series(~known)).to_list()]
    counts = {v: bad.count(v) for v in dict.fromkeys(bad)}
    shown = ", ".join(f"{v} ({n} row{'' if n == 1 else 's'})" for v, n in list(counts.items())[:6])
    first = int(np.flatnonzero(~known)[0]) + 1
    problems.append(
        f"the split column {split_column!r} must hold 'train' or 'test' in every row, but has {shown}"
        f"{' ...' if len(counts) > 6 else ''} (first in data row {first})"
    )
    return None


def _drop_missing_rows(cells: _Cells, name: str, problems: _Problems, file: Path) -> tuple[_Cells, np.ndarray | None]:
    """Drop every row with a missing cell, or NaN in a numeric column; returns (rows kept, keep mask or None)."""
    import polars as pl
    missing_cells = cells.text.select(pl.all().is_null()).to_numpy()
    columns = cells.text.columns
    numeric_cols = [j for j, c in enumerate(columns) if cells.is_numeric[c]]
    if numeric_cols:
        missing_cells[:, numeric_cols] |= np.isnan(cells.numbers.select(columns[j] for j in numeric_cols).to_numpy())
    missing = missing_cells.any(axis=1)
    if not missing.any():
        return cells, None
    logger.info("%s: dropped %d of %d rows with missing values", name, int(missing.sum()), cells.text.height)
    if missing.all():
        per_column = dict(zip(columns, missing_cells.sum(axis=0).tolist()))
        shown = ", ".join(f"{c!r} ({n})" for c, n in sorted(per_column.items(), key=lambda kv: -kv[1])[:8] if n)
        problems.append(f"every row has a missing value (missing cells per column: {shown})")
        problems.raise_if_any(name, file)
    return cells.filter(~missing), ~missing


def _labels(
    cells: _Cells, target: str, *, positive: Any, threshold: Any, flip: bool, problems: _Problems
) -> np.ndarray | None:
    """(n_rows,) int64 labels in {0, 1}, binarised and flipped; None after recording a problem."""
    y = _binarise_target(
        target,
        cells.text[target].to_numpy().astype(str),
        cells.numbers[target].to_numpy() if cells.is_numeric[target] else None,
        positive=positive,
        threshold=threshold,
        problems=problems,
    )
    if y is None:
        return None
    if flip:
        y = 1 - y
    n1 = int(y.sum())
    if n1 in (0, y.size):
        problems.append(
            f"the target {target!r} has a single class after preprocessing (all {y.size} rows are "
            f"{int(n1 > 0)}); a binary classification dataset needs both classes"
        )
    return y


def _encode_features(
    cells: _Cells, features: list[str], categorical: tuple[str, ...]
) -> tuple[np.ndarray, list[str], list[bool], list[tuple[str, ...]]]:
    """(X (n_rows, n_features), feature names, continuous flags, one-hot groups).

    Numeric columns stay as they are; each categorical column becomes one-hot columns,
    which form one group (a column with a single value seen is one column, no group).
    """
    blocks: list[np.ndarray] = []
    feature_names: list[str] = []
    continuous: list[bool] = []
    groups: list[tuple[str, ...]] = []
    for col in features:
        if col in categorical:
            # Numeric codes sort as numbers (2 before 10), text as text.
            onehot, categories = _one_hot(cells.values(col))
            blocks.append(onehot)
            names = [f"{col}={_category_label(v)}" for v in categories]
            feature_names.extend(names)
            continuous.extend([False] * len(categories))
            if len(names) > 1:
                groups.append(tuple(names))
        else:
            blocks.append(cells.numbers[col].to_numpy().reshape(-1, 1))
            feature_names.append(col)
            continuous.append(True)
    return np.concatenate(blocks, axis=1), feature_names, continuous, groups


def _some(names: list[str], limit: int = 10) -> str:
    """The first ``limit`` names, quoted, then how many more."""
    shown = ", ".join(short_repr(n, 60) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _check_features(X: np.ndarray, feature_names: list[str], max_features: int, problems: _Problems) -> None:
    finite = np.isfinite(X)
    if not finite.all():
        bad_cols = [feature_names[j] for j in np.flatnonzero(~finite.all(axis=0))]
        problems.append(f"infinite values in columns {_some(bad_cols)}")
    # Values beyond float32's range would become inf when the features are cast.
    huge = np.abs(np.where(finite, X, 0.0)) > np.finfo(np.float32).max
    if huge.any():
        problems.append(f"values beyond the float32 range (|x| > 3.4e38) in columns "
                        f"{_some([feature_names[j] for j in np.flatnonzero(huge.any(axis=0))])}")
    # A very wide file is almost always a mistake (an ID or free-text column one-hot
    # encoded, a transposed table); the classifiers and metrics would crawl on it.
    if len(feature_names) > max_features:
        problems.append(
            f"{len(feature_names)} feature columns after one-hot encoding, more than max_features={max_features}; "
            "drop columns (or raise max_features if this is intended)"
        )


def _select_rows(
    y: np.ndarray, *, n_samples: int | None, balance: bool, rng: np.random.Generator, problems: _Problems
) -> np.ndarray | None:
    """Indices (sorted, i.e. in file order) of the rows kept by balancing and subsampling.

    Each class is permuted once and a prefix taken, so with the same seed a smaller
    ``n_samples`` gives a subset of the rows of a larger one.
    """
    by_class = [np.flatnonzero(y == c) for c in (0, 1)]
    counts = [rows.size for rows in by_class]
    if balance:
        if n_samples is None:
            wanted = [min(counts)] * 2
        else:
            # As in the synthetic generators, an odd row goes to class 1.
            wanted = [n_samples // 2, n_samples - n_samples // 2]
            if wanted[0] > counts[0] or wanted[1] > counts[1]:
                problems.append(
                    f"n_samples={n_samples} needs {wanted[0]} rows of class 0 and {wanted[1]} of class 1, "
                    f"but only {counts[0]} and {counts[1]} remain after preprocessing "
                    f"(at most {2 * min(counts)} balanced rows)"
                )
                return None
        chosen = [rows[rng.permutation(rows.size)[:k]] for rows, k in zip(by_class, wanted)]
        return np.sort(np.concatenate(chosen))
    if n_samples is None:
        return np.arange(y.size)
    if n_samples > y.size:
        problems.append(f"n_samples={n_samples} is larger than the {y.size} rows left after preprocessing")
        return None
    return np.sort(rng.permutation(y.size)[:n_samples])


def _check_given_split(
    given_test: np.ndarray, y: np.ndarray, *, split_column: str, n_samples: int | None, balance: bool,
    problems: _Problems,
) -> None:
    """Record why the given split cannot be used as is: no train or test rows, or rows to drop."""
    for part, rows in (("train", ~given_test), ("test", given_test)):
        if not rows.any():
            problems.append(f"the split column {split_column!r} leaves no {part!r} rows after preprocessing")
    if n_samples is not None:
        problems.append(
            f"n_samples={n_samples} cannot be combined with split_column={split_column!r}: the given split is used "
            "as is (every row, in file order); leave n_samples unset"
        )
    counts = np.bincount(y, minlength=2)
    if balance and counts[0] != counts[1]:
        problems.append(
            f"balance=True would drop rows from the given split (the classes have {counts[0]} and {counts[1]} rows); "
            "pass balance=False to use the split as given"
        )


def load_csv(
    path: str | os.PathLike,
    *,
    target: str,
    seed: int | np.random.Generator,
    n_samples: int | None = None,
    name: str | None = None,
    positive: Any = None,
    threshold: float | str | None = None,
    flip: bool = False,
    drop: str | Sequence[str] = (),
    categorical: str | Sequence[str] = (),
    balance: bool = True,
    missing_values: Sequence[str] = MISSING_VALUES,
    source: str | None = None,
    max_features: int = 1000,
    split_column: str | None = None,
    standardize: bool = True,
) -> Dataset:
    """Load a CSV with a binary (or binarisable) target and apply the study's preprocessing.

    Steps, in order: drop the ``drop`` columns; drop every row with a missing value
    (``missing_values`` cells, NaN) in the remaining columns; binarise the target
    (``threshold`` or ``positive``, else it must be 0/1) and ``flip`` it; one-hot encode
    the ``categorical`` columns (columns named ``"SEX=2"``, one per value seen in the
    file, recorded as non-continuous); undersample the majority class (``balance``);
    draw ``n_samples`` rows at random. Rows keep their file order. All randomness comes
    from one numpy Generator made from ``seed``.

    Features are *not* standardised here: the Dataset has ``standardize=True`` (unless
    ``standardize=False``) and :meth:`Dataset.split` z-scores the continuous columns
    with training statistics.

    With ``split_column``, that column (``train`` / ``test`` in every row) is the
    train/test assignment: it is not a feature, the Dataset carries it as
    ``given_test``, and :meth:`Dataset.split` returns exactly those rows in file order
    (z-scoring, if on, fitted on the given training rows). No row of a given split is
    dropped by sampling: ``n_samples`` must be None, and ``balance`` is an error
    unless the classes are already equal (pass ``balance=False``).

    Args:
        path: the CSV file (header row required). A relative path that does not exist
            is also looked up inside :func:`recourse_ray.data.get_data_dir`.
        target: name of the target column.
        seed: int or numpy Generator driving balancing and subsampling.
        n_samples: rows to return; None keeps every row left after balancing. With
            ``balance`` the classes get ``n_samples // 2`` and ``n_samples - n_samples // 2``
            rows.
        name: the Dataset's name; defaults to the file's stem.
        positive: target value, or list of values, that mean 1 (all others mean 0).
        threshold: a number, or ``"median"``: ``y = target >= threshold``.
        flip: swap labels 0 and 1 after binarisation (1 must be the favourable outcome).
        drop: columns to remove before anything else (e.g. an ID column).
        categorical: columns to one-hot encode (numeric codes or strings).
        balance: undersample the majority class to the size of the minority class.
        missing_values: cell contents that mean "missing" (default: empty, NA, N/A, NaN,
            nan, NULL, null, ?).
        source: provenance string stored in the Dataset; defaults to the file path.
        max_features: the most feature columns (after one-hot encoding) accepted; a wider
            file is refused as a likely mistake.
        split_column: a column holding ``train`` or ``test`` in every row, used as the
            train/test split; None (default): ``Dataset.split`` draws a random one.
        standardize: whether :meth:`Dataset.split` z-scores the continuous columns by
            default (False for data already in the units the model should see).

    Returns:
        Dataset with X (n_rows, n_features) float32, y (n_rows,) in {0, 1},
        ``continuous`` False for one-hot columns, ``one_hot_groups`` one group per
        categorical column (searches keep each group one-hot, docs/constraints.md),
        ``standardize`` as given and ``given_test`` (n_rows,) bool with
        ``split_column`` (else None).

    Raises:
        ValueError: listing every problem found: missing or empty file, unknown target,
            ``drop``, ``categorical`` or split column, non-numeric columns not declared
            categorical, a single-class target, NaN/inf left after dropping missing rows,
            too few rows for ``n_samples``, split values other than ``train``/``test``,
            a split without training or test rows, a split combined with sampling.
        TypeError: a column option that is not a column name, a non-bool ``standardize``.
    """
    rng = as_rng(seed)
    n_samples = _check_n_samples(n_samples)
    missing_values = _check_missing_values(missing_values)
    target = _column_name(target, "target")
    split_column = _column_name(split_column, "split_column", optional=True)
    if not isinstance(standardize, (bool, np.bool_)):
        raise TypeError(param_message("standardize", "load_csv", "a bool", standardize))
    drop_cols = tuple(dict.fromkeys(_names(drop, "drop")))
    cat_cols = tuple(dict.fromkeys(_names(categorical, "categorical")))
    file = _resolve_path(path)
    name = file.stem if name is None else str(name)
    frame = _read_frame(file, name, missing_values)

    problems = _Problems()
    _check_columns(frame, target=target, drop=drop_cols, categorical=cat_cols, split_column=split_column,
                   problems=problems)
    columns = frame.columns
    frame = frame.drop([c for c in drop_cols if c in columns and c not in (target, split_column)])
    features = [c for c in frame.columns if c not in (target, split_column)]
    if not features and target in columns:
        problems.append("no feature columns are left besides the target")
    cells = _Cells.parse(frame)
    _check_numeric(cells, features, cat_cols, problems)
    problems.raise_if_any(name, file)

    given_test = None
    if split_column is not None:
        given_test = _given_test_rows(cells, split_column, problems)
        cells = cells.without(split_column)
    cells, kept = _drop_missing_rows(cells, name, problems, file)
    if given_test is not None and kept is not None:
        given_test = given_test[kept]
    y = _labels(cells, target, positive=positive, threshold=threshold, flip=flip, problems=problems)
    X, feature_names, continuous, groups = _encode_features(cells, features, cat_cols)
    _check_features(X, feature_names, max_features, problems)
    problems.raise_if_any(name, file)

    if split_column is None:
        rows = _select_rows(y, n_samples=n_samples, balance=balance, rng=rng, problems=problems)
    else:
        _check_given_split(given_test, y, split_column=split_column, n_samples=n_samples, balance=balance,
                           problems=problems)
        rows = np.arange(y.size)
    problems.raise_if_any(name, file)
    return Dataset(
        X=X[rows].astype(np.float32),
        y=y[rows],
        feature_names=tuple(feature_names),
        name=name,
        continuous=np.asarray(continuous, dtype=bool),
        standardize=bool(standardize),
        source=str(file) if source is None else source,
        given_test=None if given_test is None else given_test[rows],
        one_hot_groups=tuple(groups),
    )


# ---------------------------------------------------------------------------------------
# Named datasets of the study (files described in ../shared/data/README.md)

_OPTIONS = (
    "target", "name", "positive", "threshold", "flip", "drop", "categorical", "balance", "missing_values", "source",
    "max_features", "split_column", "standardize",
)


def _check_options(dataset: str, options: Mapping[str, Any], arguments: str) -> None:
    """Refuse options that ``load_csv`` does not take, with the closest match; ``arguments`` lists the loader's own."""
    check_options(dataset, options, _OPTIONS, arguments)


def _named(
    dataset: str, *, seed: int | np.random.Generator, n_samples: int | None, options: dict[str, Any], **defaults: Any
) -> Dataset:
    _check_options(dataset, options, "seed, n_samples")
    settings = {"name": dataset, **defaults, **options}
    return load_csv(_data.get_data_dir() / FILES[dataset], seed=seed, n_samples=n_samples, **settings)


def california_housing(*, seed: int | np.random.Generator, n_samples: int | None = None, **options: Any) -> Dataset:
    """California Housing (StatLib via scikit-learn): y = 1 when the median house value is at least its median.

    8 continuous features in raw units. Balanced by undersampling; the study uses
    ``n_samples=5000``. ``options`` override any :func:`load_csv` setting.
    """
    return _named(
        "california_housing", seed=seed, n_samples=n_samples, options=options,
        target="target", threshold="median",
        source="california_housing.csv (StatLib, via scikit-learn): y = value >= median",
    )


def credit_default(*, seed: int | np.random.Generator, n_samples: int | None = None, **options: Any) -> Dataset:
    """UCI credit card default (Yeh & Lien 2009), flipped so that y = 1 means *no* default.

    ``ID`` is dropped; SEX, EDUCATION and MARRIAGE are one-hot encoded (``"SEX=2"`` ...),
    each one a one-hot group that counterfactuals keep one-hot (the study's groups).
    Balanced by undersampling (23,364 / 6,636 in the file); the study uses ``n_samples=5000``.
    """
    return _named(
        "credit_default", seed=seed, n_samples=n_samples, options=options,
        target="default.payment.next.month", flip=True, drop=("ID",),
        categorical=("SEX", "EDUCATION", "MARRIAGE"),
        source="uci_credit_card_default.csv (UCI, Yeh & Lien 2009): y = no default",
    )


def gmsc(*, seed: int | np.random.Generator, n_samples: int | None = None, **options: Any) -> Dataset:
    """Give Me Some Credit (Kaggle 2011), already balanced; y = 1 means no serious delinquency.

    10 continuous features in raw units; the study uses ``n_samples=5000``.
    """
    return _named(
        "gmsc", seed=seed, n_samples=n_samples, options=options,
        target="target",
        source="give_me_some_credit_balanced.csv (Kaggle 2011): y = no serious delinquency",
    )


def german_credit(*, seed: int | np.random.Generator, n_samples: int | None = None, **options: Any) -> Dataset:
    """Statlog German Credit, numeric variant (24 integer-coded features); y = 1 means good credit.

    The target column ``24`` is mapped 1 (good) -> 1, 2 (bad) -> 0. 1,000 rows (700 / 300),
    600 after balancing: small and fast, mainly for tests.
    """
    return _named(
        "german_credit", seed=seed, n_samples=n_samples, options=options,
        target="24", positive=1,
        source="german_credit.csv (Statlog, numeric): y = good credit",
    )


def csv(
    *,
    seed: int | np.random.Generator,
    n_samples: int | None = None,
    path: str | os.PathLike | None = None,
    target: str | None = None,
    **options: Any,
) -> Dataset:
    """A user CSV: ``load("csv", path=..., target=..., seed=...)``; ``options`` go to :func:`load_csv`."""
    missing = [key for key, value in (("path", path), ("target", target)) if value is None]
    if missing:
        raise ValueError(
            f"The 'csv' dataset needs the option(s) {', '.join(map(repr, missing))}, e.g. "
            "load('csv', path='my.csv', target='label', seed=0)."
        )
    _check_options("csv", options, "path, seed, n_samples")
    return load_csv(path, target=target, seed=seed, n_samples=n_samples, **options)


_LOADERS: dict[str, Callable[..., Dataset]] = {
    "california_housing": california_housing,
    "credit_default": credit_default,
    "gmsc": gmsc,
    "german_credit": german_credit,
    "csv": csv,
}
for _name, _loader in _LOADERS.items():
    _data.register(_name, _loader)
