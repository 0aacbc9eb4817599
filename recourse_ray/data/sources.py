"""Where the data files come from, and how they get into the data directory.

Sits in front of the loaders that read files: the real-world loaders of
:mod:`recourse_ray.data.tabular` read ``get_data_dir() / FILES[name]``, the study's
published synthetic sets (:func:`recourse_ray.data.synthetic.published`) read
``get_data_dir() / PUBLISHED_FILES[name]``; this module puts those files there. Each
such dataset has a :class:`Source` (canonical public page, direct download if there is
one, the expected file name and its SHA-256, and a converter from the raw download to
our CSV layout). :data:`GROUPS` names sets of them (``study``: the four published
synthetic sets).

- :func:`fetch` downloads a direct-download source, converts, verifies and installs it;
  offline it fails fast, saying where to put the file by hand.
- :func:`import_file` installs a local file: our CSV as is, or a raw download that the
  source's converter recognises (e.g. ``cal_housing.tgz``, ``german.data-numeric``).
- :func:`info` describes a dataset: rows, features, class balance, source, file status.

The checksums are those of the reference copies described in
``../shared/data/README.md`` and ``../shared/data/synthetic/README.md``. A file whose checksum differs is refused unless
``force=True``, and even then it must load through the named loader. Installing is
atomic (a temporary file in the data directory, then ``os.replace``), and an existing
different file is never replaced silently: that needs ``force`` and the old file is
kept as ``<file>.<sha256 prefix>.bak``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import http.client
import io
import itertools
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # polars is imported where it is used: Ray workers never load it
    import polars as pl

from recourse_ray import data as _data
from recourse_ray._config import check_real
from recourse_ray._registry import is_import_path, suggest
from recourse_ray._rng import as_rng
from recourse_ray.data.synthetic import (
    PUBLISHED_COMMIT,
    PUBLISHED_FILES,
    PUBLISHED_PATH,
    PUBLISHED_REPOSITORY,
)
from recourse_ray.data.tabular import FILES

__all__ = [
    "Source",
    "SOURCES",
    "GROUPS",
    "STUDY_URL_ENV",
    "source",
    "data_file",
    "download_url",
    "fetch",
    "import_file",
    "info",
    "Installed",
    "DatasetInfo",
    "DownloadError",
    "ChecksumMismatch",
    "ManualDownloadRequired",
    "sha256_of",
    "convert_california_housing",
    "convert_german_credit",
    "convert_credit_default",
    "convert_gmsc",
    "DEFAULT_TIMEOUT",
]

logger = logging.getLogger(__name__)

#: Seconds a download may wait for the server before it is given up.
DEFAULT_TIMEOUT: float = 20.0
#: The most bytes a download may have (the largest raw download is about 0.5 MB).
_MAX_DOWNLOAD_BYTES = 256 * 2**20

#: The environment variable that replaces the base URL of the study's published files
#: (``<base>/<file name>``), e.g. a mirror or, in tests, a local server.
STUDY_URL_ENV = "RECOURSE_RAY_STUDY_DATA_URL"

#: ``downloader(url, path, timeout)`` writes the resource at ``url`` to ``path``.
Downloader = Callable[[str, Path, float], None]


class DownloadError(RuntimeError):
    """A download failed (offline, DNS failure, timeout, HTTP error, unexpected content)."""


class ChecksumMismatch(ValueError):
    """A file's SHA-256 differs from the reference copy's.

    Attributes:
        expected: the reference SHA-256 (hex).
        actual: the file's SHA-256 (hex).
    """

    def __init__(self, message: str, *, expected: str, actual: str) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class ManualDownloadRequired(ValueError):
    """The dataset has no direct download (a login or an extra package is needed)."""


@dataclass(frozen=True, kw_only=True)
class Source:
    """Provenance and installation recipe of one real-world dataset.

    Attributes:
        name: the registry name (``recourse_ray.data.load(name, ...)``).
        file_name: the file the named loader reads in the data directory.
        sha256: SHA-256 (hex) of the reference CSV.
        header: the reference CSV's first line (without the newline).
        page: the canonical public page describing the data.
        download_url: a direct download of the raw data, or None when it needs a login
            or a format this package cannot read.
        raw_name: the name of the raw file a user downloads from ``page``.
        description: one line on what the data is.
        convert: raw bytes -> bytes in our CSV layout; raises ValueError when the
            input is not in the raw format. None when there is nothing to convert.
        reproducible: whether ``convert`` reproduces the reference CSV byte for byte
            (False when the reference was made with a random undersample).
        manual: how to get the raw file by hand (None for direct downloads).
        url_env: an environment variable that, when set, replaces the download's base
            URL (the file is then fetched from ``$url_env/<raw_name>``); None: no override.
    """

    name: str
    file_name: str
    sha256: str
    header: str
    page: str
    download_url: str | None
    raw_name: str
    description: str
    convert: Callable[[bytes], bytes] | None = None
    reproducible: bool = True
    manual: str | None = None
    url_env: str | None = None


def sha256_of(content: bytes | str | os.PathLike) -> str:
    """SHA-256 (hex) of ``content`` (bytes) or of the file at a path."""
    if isinstance(content, bytes):
        return hashlib.sha256(content).hexdigest()
    digest = hashlib.sha256()
    with open(content, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------
# Converters: raw download -> our CSV layout (header line, comma-separated, "\n" endings)

_CALIFORNIA_HEADER = "MedInc,HouseAge,AveRooms,AveBedrms,Population,AveOccup,Latitude,Longitude,target"
_CALIFORNIA_MEMBER = "cal_housing.data"


def convert_california_housing(raw: bytes) -> bytes:
    """StatLib California Housing (``cal_housing.tgz`` or its ``cal_housing.data``) -> our CSV.

    The raw rows are ``longitude, latitude, housingMedianAge, totalRooms, totalBedrooms,
    population, households, medianIncome, medianHouseValue``; the CSV has scikit-learn's
    features ``MedInc, HouseAge, AveRooms = totalRooms / households, AveBedrms =
    totalBedrooms / households, Population, AveOccup = population / households, Latitude,
    Longitude`` and ``target = medianHouseValue / 100000``, each value written as the
    shortest repr of its float64 (as ``fetch_california_housing`` followed by pandas'
    ``to_csv`` would). This reproduces the reference CSV byte for byte.

    Raises:
        ValueError: when ``raw`` is neither the archive nor rows of 9 numbers.
    """
    if raw[:2] == b"\x1f\x8b":  # gzip: the archive as scikit-learn downloads it
        try:
            with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as archive:
                members = [m for m in archive.getmembers() if m.isfile() and m.name.endswith(_CALIFORNIA_MEMBER)]
                if not members:
                    raise ValueError(f"the archive holds no {_CALIFORNIA_MEMBER}")
                raw = archive.extractfile(members[0]).read()
        except (tarfile.TarError, gzip.BadGzipFile, EOFError, OSError) as exc:
            raise ValueError(f"not a readable cal_housing.tgz archive ({exc})") from None
    lines = _text(raw).splitlines()
    out = [_CALIFORNIA_HEADER]
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        values = _floats(line.split(","), 9, number, "cal_housing.data")
        lon, lat, age, rooms, bedrooms, population, households, income, value = values
        if households == 0:
            raise ValueError(f"line {number} of cal_housing.data has households = 0")
        derived = (income, age, rooms / households, bedrooms / households, population,
                   population / households, lat, lon, value / 100000.0)
        out.append(",".join(repr(v) for v in derived))
    if len(out) == 1:
        raise ValueError("cal_housing.data holds no rows")
    return ("\n".join(out) + "\n").encode()


def convert_german_credit(raw: bytes) -> bytes:
    """UCI Statlog ``german.data-numeric`` (whitespace-separated, 25 integers a row) -> our CSV.

    The CSV's header is the column indices ``0,...,24``; column ``24`` is the label
    (1 = good, 2 = bad). Reproduces the reference CSV byte for byte.

    Raises:
        ValueError: when a row does not hold exactly 25 integers.
    """
    out = [",".join(str(i) for i in range(25))]
    for number, line in enumerate(_text(raw).splitlines(), start=1):
        cells = line.split()
        if not cells:
            continue
        if len(cells) != 25:
            raise ValueError(f"line {number} of german.data-numeric has {len(cells)} values, expected 25")
        try:
            out.append(",".join(str(int(c)) for c in cells))
        except ValueError:
            raise ValueError(f"line {number} of german.data-numeric holds a non-integer value: {line.strip()!r}") from None
    if len(out) == 1:
        raise ValueError("german.data-numeric holds no rows")
    return ("\n".join(out) + "\n").encode()


_CREDIT_COLUMNS = (
    ["ID", "LIMIT_BAL", "SEX", "EDUCATION", "MARRIAGE", "AGE"]
    + ["PAY_0"] + [f"PAY_{i}" for i in range(2, 7)]
    + [f"BILL_AMT{i}" for i in range(1, 7)]
    + [f"PAY_AMT{i}" for i in range(1, 7)]
    + ["default.payment.next.month"]
)
_CREDIT_HEADER = ",".join(f'"{c}"' for c in _CREDIT_COLUMNS)


def _r_number(value: int) -> str:
    """An integer as R's ``write.csv`` writes it: scientific when that is shorter (500000 -> 5e+05)."""
    fixed = str(value)
    if value % 100000:  # fewer than 5 trailing zeros: the fixed form is never longer
        return fixed
    digits = str(abs(value)).rstrip("0")
    if not digits:
        return fixed
    exponent = len(str(abs(value))) - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    scientific = f"{'-' if value < 0 else ''}{mantissa}e+{exponent:02d}"
    return scientific if len(scientific) < len(fixed) else fixed


def convert_credit_default(raw: bytes) -> bytes:
    """UCI "default of credit card clients", saved as CSV, -> our CSV.

    Accepts the sheet of the UCI workbook saved as CSV (a first row ``X1 ... X23, Y``
    above the names, the label named ``default payment next month``) and the Kaggle
    copy ``UCI_Credit_Card.csv`` (values like ``20000.0``). Writes the reference layout:
    quoted header with the label named ``default.payment.next.month``, integers as R's
    ``write.csv`` writes them (``5e+05``), which reproduces the reference CSV byte for
    byte from a faithful export. The ``.xls`` workbook itself is not read (that needs an
    extra package).

    Raises:
        ValueError: for the workbook itself, unexpected columns or non-integer values.
    """
    import polars as pl
    if raw[:4] in (b"\xd0\xcf\x11\xe0", b"PK\x03\x04"):
        raise ValueError(
            "this is the Excel workbook itself, which cannot be read without an extra package: open it in a "
            "spreadsheet program, save the sheet as CSV, and import that CSV"
        )
    text = _text(raw)
    first_rows = list(itertools.islice(csv.reader(io.StringIO(text)), 3))
    header_at = next((i for i, row in enumerate(first_rows) if row and row[0].strip() == "ID"), None)
    if header_at is None:
        raise ValueError("no header row starting with 'ID' in the first 3 rows")
    names = [c.strip().replace(" ", ".") for c in first_rows[header_at]]
    if names != _CREDIT_COLUMNS:
        raise ValueError(f"unexpected columns {names[:4]} ...; expected {', '.join(_CREDIT_COLUMNS)}")
    # 750,000 cells: parsed and written by polars, about 5x faster than the csv module.
    try:
        body = pl.read_csv(io.StringIO(text), has_header=False, skip_rows=header_at + 1, infer_schema=False)
    except pl.exceptions.NoDataError:
        raise ValueError("the CSV holds no data rows") from None
    except pl.exceptions.PolarsError as exc:
        raise ValueError(f"the data rows cannot be parsed as CSV ({exc})") from None
    body = body.filter(~pl.all_horizontal(pl.all().is_null()))  # blank lines
    if body.height == 0:
        raise ValueError("the CSV holds no data rows")
    if body.width != len(_CREDIT_COLUMNS):
        raise ValueError(f"the data rows have {body.width} values, expected {len(_CREDIT_COLUMNS)}")
    values = body.select(pl.all().str.strip_chars().cast(pl.Float64, strict=False)).to_numpy()
    integers = np.round(np.nan_to_num(values)).astype(np.int64)
    bad = np.flatnonzero(np.isnan(values).any(axis=1) | (integers != values).any(axis=1))
    if bad.size:
        shown = ",".join("" if v is None else v for v in body.row(int(bad[0])))
        raise ValueError(f"data row {bad[0] + 1} holds a missing, non-numeric or non-integer value: {shown!r}")
    cells = pl.DataFrame(integers, orient="row").select(pl.all().cast(pl.Utf8))
    # Only a number with 5 or more trailing zeros is shorter in R's scientific notation.
    shorter = np.unique(integers[(integers % 100000 == 0) & (integers != 0)]).tolist()
    if shorter:
        cells = cells.select(pl.all().replace({str(v): _r_number(v) for v in shorter}))
    return (_CREDIT_HEADER + "\n" + cells.write_csv(include_header=False, line_terminator="\n")).encode()


_GMSC_FEATURES = (
    "RevolvingUtilizationOfUnsecuredLines", "age", "NumberOfTime30-59DaysPastDueNotWorse", "DebtRatio",
    "MonthlyIncome", "NumberOfOpenCreditLinesAndLoans", "NumberOfTimes90DaysLate",
    "NumberRealEstateLoansOrLines", "NumberOfTime60-89DaysPastDueNotWorse", "NumberOfDependents",
)
_GMSC_FLOAT_COLUMNS = ("RevolvingUtilizationOfUnsecuredLines", "DebtRatio")
_GMSC_HEADER = ",".join(("target",) + _GMSC_FEATURES)


def _julia_float(value: float) -> str:
    """A float as Julia prints it (the reference GMSC file was written by Julia): 1.6e-5, 1607.0, 1.5e6."""
    text = repr(value)
    if "e" not in text and abs(value) >= 1e6:  # Julia is scientific from 1e6 on, Python from 1e16
        whole, _, fraction = text.lstrip("-").partition(".")
        digits = (whole + fraction).rstrip("0")
        return f"{'-' if value < 0 else ''}{digits[0]}.{digits[1:] or '0'}e{len(whole) - 1}"
    mantissa, _, exponent = text.partition("e")
    if not exponent:
        return text
    if "." not in mantissa:
        mantissa += ".0"
    return f"{mantissa}e{int(exponent)}"


def convert_gmsc(raw: bytes, *, seed: int = 0) -> bytes:
    """Kaggle "Give Me Some Credit" ``cs-training.csv`` -> our balanced CSV.

    Steps (those used for the reference copy): drop the unnamed index column, drop rows
    with a missing value (``NA``), ``target = 1 - SeriousDlqin2yrs`` (1 = no serious
    delinquency), undersample the majority class to the size of the minority class
    (rows keep their file order), write ``target`` then the 10 features. The two ratio
    columns are written as floats, the others as integers.

    The reference copy's undersample cannot be reproduced, so the result's checksum
    differs from the reference (``Source.reproducible`` is False): installing it needs
    ``force``.

    Args:
        raw: the bytes of ``cs-training.csv``.
        seed: drives the undersample.

    Raises:
        ValueError: when the columns are not those of ``cs-training.csv``.
    """
    rows = list(csv.reader(io.StringIO(_text(raw))))
    if not rows:
        raise ValueError("the file is empty")
    names = [c.strip() for c in rows[0]]
    wanted = ("SeriousDlqin2yrs",) + _GMSC_FEATURES
    missing = [c for c in wanted if c not in names]
    if missing:
        raise ValueError(f"not cs-training.csv: no column(s) {', '.join(missing)}")
    index = [names.index(c) for c in wanted]
    labels, kept = [], []
    for number, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(names):
            raise ValueError(f"row {number} has {len(row)} cells, the header {len(names)}")
        cells = [row[i].strip() for i in index]
        if any(c in ("", "NA", "NaN", "nan") for c in cells):
            continue
        values = _floats(cells, len(cells), number, "cs-training.csv")
        if values[0] not in (0.0, 1.0):
            raise ValueError(f"row {number}: SeriousDlqin2yrs must be 0 or 1, got {cells[0]!r}")
        target = 1 - int(values[0])
        labels.append(target)
        formatted = [
            _julia_float(v) if name in _GMSC_FLOAT_COLUMNS else str(int(v))
            for name, v in zip(_GMSC_FEATURES, values[1:])
        ]
        kept.append(",".join([str(target)] + formatted))
    y = np.asarray(labels, dtype=np.int64)
    by_class = [np.flatnonzero(y == c) for c in (0, 1)]
    size = min(rows_.size for rows_ in by_class)
    if size == 0:
        raise ValueError("after dropping rows with missing values, one class has no rows")
    rng = as_rng(seed)
    chosen = np.sort(np.concatenate([rows_[np.sort(rng.permutation(rows_.size)[:size])] for rows_ in by_class]))
    return ("\n".join([_GMSC_HEADER] + [kept[i] for i in chosen]) + "\n").encode()


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError("the file is not text (UTF-8)") from None


def _floats(cells: list[str], n: int, number: int, what: str) -> list[float]:
    if len(cells) != n:
        raise ValueError(f"line {number} of {what} has {len(cells)} values, expected {n}")
    try:
        return [float(c) for c in cells]
    except ValueError:
        raise ValueError(f"line {number} of {what} holds a non-numeric value: {','.join(cells)!r}") from None


# ---------------------------------------------------------------------------------------
# The registry

SOURCES: dict[str, Source] = {}


def _add(name: str, **recipe: Any) -> None:
    """Register the :class:`Source` of ``name``; it installs the file its loader reads.

    That is ``tabular.FILES[name]`` for a real-world set, ``synthetic.PUBLISHED_FILES[name]``
    for a published synthetic one.
    """
    if name in SOURCES:
        raise ValueError(f"The data source {name!r} is already registered.")
    file_name = FILES.get(name, PUBLISHED_FILES.get(name))
    if file_name is None:
        raise ValueError(
            f"The data source {name!r} has no loader file; add it to recourse_ray.data.tabular.FILES "
            "(or recourse_ray.data.synthetic.PUBLISHED_FILES)."
        )
    SOURCES[name] = Source(name=name, file_name=file_name, **recipe)


_add(
    "california_housing",
    sha256="d77e47abf8adbf425f82dd80ebc02dc6a30dc6e9525fa1ee9076789647cba2bf",
    header=_CALIFORNIA_HEADER,
    page="https://www.dcc.fc.up.pt/~ltorgo/Regression/cal_housing.html",
    download_url="https://ndownloader.figshare.com/files/5976036",
    raw_name="cal_housing.tgz",
    description="California Housing, 1990 US census block groups (Pace & Barry 1997; StatLib archive as served "
    "by scikit-learn): 20,640 rows, 8 features, median house value in 100k USD",
    convert=convert_california_housing,
)
_add(
    "credit_default",
    sha256="a0f0ab49d6326671d6cd83be5c88dcf18007025fe9a53ecd699119c871176ca1",
    header=_CREDIT_HEADER,
    page="https://archive.ics.uci.edu/dataset/350/default+of+credit+card+clients",
    download_url=None,
    raw_name="default of credit card clients.xls",
    description="Default of credit card clients, Taiwan 2005 (Yeh & Lien 2009; UCI): 30,000 rows, "
    "23 features, default next month (23,364 / 6,636)",
    convert=convert_credit_default,
    manual=(
        "The UCI original is an Excel workbook (.xls), which cannot be read without an extra package. "
        "Download 'default of credit card clients.xls' from {page} and save its sheet as CSV, e.g. as "
        "default_of_credit_card_clients.csv (or download the CSV copy UCI_Credit_Card.csv from "
        "https://www.kaggle.com/datasets/uciml/default-of-credit-card-clients-dataset), then run\n"
        "  recourse-ray datasets import credit_default default_of_credit_card_clients.csv\n"
        "which converts it to {file_name} in the data directory {data_dir}."
    ),
)
_add(
    "gmsc",
    sha256="e00a2463dcceb90a0ac6ea37044750f417ebe62f51380a9bc75d6e08fd43e0f4",
    header=_GMSC_HEADER,
    page="https://www.kaggle.com/c/GiveMeSomeCredit/data",
    download_url=None,
    raw_name="cs-training.csv",
    description="Give Me Some Credit (Kaggle 2011), rows with missing values dropped and balanced by "
    "undersampling: 16,714 rows, 10 features, no serious delinquency in 2 years",
    convert=convert_gmsc,
    reproducible=False,
    manual=(
        "Kaggle requires a login. Sign in, accept the competition's rules at {page}, download cs-training.csv, "
        "and run\n"
        "  recourse-ray datasets import gmsc cs-training.csv --force\n"
        "which converts it to {file_name} in the data directory {data_dir} (--force: the balancing undersample "
        "differs from the reference copy's, so its checksum cannot match). A copy of the reference "
        "{file_name} imports without --force."
    ),
)
_add(
    "german_credit",
    sha256="a46948f1eb106b90d7550d2251ed709a54d6b27fb3d2e23c4c3aede0d815fbef",
    header=",".join(str(i) for i in range(25)),
    page="https://archive.ics.uci.edu/dataset/144/statlog+german+credit+data",
    download_url="https://archive.ics.uci.edu/ml/machine-learning-databases/statlog/german/german.data-numeric",
    raw_name="german.data-numeric",
    description="Statlog German Credit, numeric variant (Hofmann 1994; UCI): 1,000 rows, 24 integer-coded "
    "features, good / bad credit (700 / 300)",
    convert=convert_german_credit,
)


# The study's published synthetic data (the paper's repository; ../shared/data/synthetic/README.md).
_STUDY_TREE = f"https://github.com/{PUBLISHED_REPOSITORY}/tree/{PUBLISHED_COMMIT}/{PUBLISHED_PATH}"
_STUDY_RAW = f"https://raw.githubusercontent.com/{PUBLISHED_REPOSITORY}/{PUBLISHED_COMMIT}/{PUBLISHED_PATH}"
_STUDY = {
    "study_overlapping": (
        "c82f7efcde6fa37cd57235e97be62263330997c79cc48e4940c35e488b016bff",
        "two Gaussian blobs, std 0.5 (MLJ make_blobs)",
    ),
    "study_linearly_separable": (
        "7b28685aec3eddef158c8be02b0a8af1d81afc7ae55c431c3177efec20fc3da3",
        "two Gaussian blobs, std 0.1 (MLJ make_blobs)",
    ),
    "study_circles": (
        "b49f6736da92bed65207eea45af02a7c0e6863d3521e6c2c10cdf24800628c20",
        "two concentric circles, noise 0.15, factor 0.01, target = outer ring (MLJ make_circles)",
    ),
    "study_moons": (
        "0aa211fe1a9634b6d123213c864f585493d36d0304d886dc73c1b4cd0130a20e",
        "two interleaving half circles, noise 0.1 (MLJ make_moons)",
    ),
}
for _name, (_sha256, _what) in _STUDY.items():
    _file = PUBLISHED_FILES[_name]
    _add(
        _name,
        sha256=_sha256,
        header="x1,x2,target",
        page=_STUDY_TREE,
        download_url=f"{_STUDY_RAW}/{_file}",
        raw_name=_file,
        description=f"The study's published {_file} (Altmeyer et al. 2023, {PUBLISHED_REPOSITORY}@{PUBLISHED_COMMIT}): "
        f"{_what}; 1,000 rows, 500 per class, raw units",
        url_env=STUDY_URL_ENV,
    )

#: Names that stand for several datasets in ``recourse-ray datasets fetch``.
GROUPS: dict[str, tuple[str, ...]] = {"study": tuple(PUBLISHED_FILES)}


def download_url(src: Source) -> str | None:
    """Where :func:`fetch` downloads ``src`` from: its ``download_url``, or ``$url_env/<raw_name>`` when that is set."""
    base = os.environ.get(src.url_env) if src.url_env else None
    if src.download_url is None or not base:
        return src.download_url
    return f"{base.rstrip('/')}/{src.raw_name}"


def data_file(name: str, *, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The file a registered dataset's loader reads (``data_dir`` or the data directory), None when it reads none."""
    src = SOURCES.get(name) if isinstance(name, str) else None
    return None if src is None else _resolve_dir(data_dir) / src.file_name


def source(name: str) -> Source:
    """The :class:`Source` of a real-world dataset.

    Raises:
        KeyError: for a name without a source: a synthetic dataset ("nothing to fetch"),
            or an unknown name (with the closest match).
    """
    try:
        return SOURCES[name]
    except (KeyError, TypeError):
        pass
    valid = ", ".join(sorted(SOURCES))
    if isinstance(name, str) and name in _data.DATASETS:
        published = f"study_{name}"
        hint = (
            f" The study's published draw of it is the dataset {published!r} (recourse-ray datasets fetch {published})."
            if published in SOURCES else ""
        )
        raise KeyError(
            f"The dataset {name!r} has no file to fetch or import (it is generated, or reads a path you give).{hint} "
            f"Datasets with files: {valid}."
        )
    raise KeyError(f"Unknown dataset {name!r}.{suggest(str(name), sorted(SOURCES))} Datasets with files: {valid}.")


# ---------------------------------------------------------------------------------------
# Installing files

@dataclass(frozen=True, kw_only=True)
class Installed:
    """What :func:`fetch` or :func:`import_file` did.

    Attributes:
        name: the dataset.
        path: the installed file (``data_dir / file_name``).
        sha256: its SHA-256.
        checksum_ok: whether that is the reference checksum.
        action: ``"written"`` (new file), ``"replaced"`` (an older, different file was
            moved to ``backup``) or ``"unchanged"`` (the same file was already there).
        origin: where the content came from (a path or URL, and any conversion).
        backup: where a replaced file was kept, else None.
    """

    name: str
    path: Path
    sha256: str
    checksum_ok: bool
    action: str
    origin: str
    backup: Path | None = None

    def summary(self) -> str:
        """One line for people: what was done, where, and the checksum status."""
        status = "checksum ok" if self.checksum_ok else f"checksum MISMATCH accepted with force (SHA-256 {self.sha256})"
        if self.action == "unchanged":
            return f"{self.name}: {self.path} already holds this file ({status}); nothing changed"
        what = f"{self.name}: {self.action} {self.path} from {self.origin} ({status})"
        if self.backup is not None:
            what += f"; the previous file is kept as {self.backup}"
        return what


def _resolve_dir(data_dir: str | os.PathLike | None) -> Path:
    return _data.get_data_dir() if data_dir is None else Path(data_dir).expanduser()


def _load_unbalanced(name: str, directory: Path) -> _data.Dataset:
    """The named loader on ``directory``, all rows kept (no balancing)."""
    with _data.data_dir(directory):
        return _data.load(name, seed=0, balance=False)


def _install(src: Source, content: bytes, directory: Path, *, force: bool, origin: str) -> Installed:
    """Verify ``content`` and write it atomically as ``directory / src.file_name``."""
    dest = directory / src.file_name
    digest = sha256_of(content)
    checksum_ok = digest == src.sha256
    if not checksum_ok and not force:
        why = "" if src.reproducible or not origin.startswith("converted") else (
            f" This is expected for a file converted from {src.raw_name}: the reference copy was balanced with a "
            "random undersample that cannot be reproduced."
        )
        raise ChecksumMismatch(
            f"The file for dataset {src.name!r} ({origin}) does not match the reference copy: SHA-256 {digest}, "
            f"expected {src.sha256}.{why} Nothing was written. Pass force=True (--force) to install it anyway "
            "(it must still load as this dataset).",
            expected=src.sha256,
            actual=digest,
        )
    old_digest = sha256_of(dest) if dest.is_file() else None
    if old_digest == digest:
        return Installed(name=src.name, path=dest, sha256=digest, checksum_ok=checksum_ok, action="unchanged", origin=origin)
    if old_digest is not None and not force:
        old_status = "the reference checksum" if old_digest == src.sha256 else "not the reference checksum"
        raise ValueError(
            f"{dest} already exists with different contents (SHA-256 {old_digest}, {old_status}); the new file has "
            f"SHA-256 {digest}. Nothing was written. Pass force=True (--force) to replace it; the old file is then "
            f"kept as {src.file_name}.{old_digest[:12]}.bak."
        )
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{src.name}-", suffix=".partial", dir=directory))
    try:
        staged = staging / src.file_name
        with open(staged, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        if not checksum_ok:
            try:
                _load_unbalanced(src.name, staging)
            except (ValueError, TypeError) as exc:
                raise ValueError(
                    f"The file for dataset {src.name!r} ({origin}) does not match the reference copy (SHA-256 {digest}, "
                    f"expected {src.sha256}) and does not load as this dataset either, so it is refused even with "
                    f"force: {exc.args[0] if exc.args else exc}"
                ) from None
        backup = None
        if old_digest is not None:
            backup = directory / f"{src.file_name}.{old_digest[:12]}.bak"
            os.replace(dest, backup)
        os.replace(staged, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    action = "replaced" if old_digest is not None else "written"
    logger.info("%s: %s %s (%s)", src.name, action, dest, origin)
    return Installed(
        name=src.name, path=dest, sha256=digest, checksum_ok=checksum_ok, action=action, origin=origin, backup=backup
    )


def _where_to_put(src: Source, directory: Path) -> str:
    return (
        f"To install it by hand, download {src.raw_name} from {src.download_url or src.page} and run\n"
        f"  recourse-ray datasets import {src.name} PATH/TO/{src.raw_name}\n"
        f"or put the CSV itself at {directory / src.file_name} (expected SHA-256 {src.sha256}). "
        f"The data directory is {directory}; choose another with the RECOURSE_RAY_DATA environment variable "
        "(or --data-dir, recourse_ray.data.set_data_dir). See docs/data.md."
    )


def _manual_message(src: Source, directory: Path) -> str:
    return (
        f"The dataset {src.name!r} cannot be downloaded automatically. "
        + src.manual.format(page=src.page, file_name=src.file_name, data_dir=directory)
        + " Set RECOURSE_RAY_DATA (or --data-dir) to use another data directory; see docs/data.md."
    )


def _urllib_download(url: str, path: Path, timeout: float) -> None:
    """Write the resource at ``url`` to ``path`` (urllib; ``timeout`` seconds per blocking step)."""
    request = urllib.request.Request(url, headers={"User-Agent": "recourse-ray"})
    size = 0
    with urllib.request.urlopen(request, timeout=timeout) as response, open(path, "wb") as f:
        for block in iter(lambda: response.read(1 << 16), b""):
            size += len(block)
            if size > _MAX_DOWNLOAD_BYTES:
                raise DownloadError(f"{url} sent more than {_MAX_DOWNLOAD_BYTES} bytes; refusing to continue")
            f.write(block)


def fetch(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    force: bool = False,
    downloader: Downloader | None = None,
) -> Installed:
    """Download a dataset's raw file, convert it to our CSV, verify it and install it.

    A file already present with the reference checksum is kept as is, without any
    network access.

    Args:
        name: a dataset with a direct download (``california_housing``, ``german_credit``, the
            published synthetic sets ``study_overlapping``, ... ; their base URL can be
            replaced with the ``RECOURSE_RAY_STUDY_DATA_URL`` environment variable).
        data_dir: where to install; defaults to :func:`recourse_ray.data.get_data_dir`.
        timeout: seconds to wait for the server (connection and each read).
        force: install a result whose checksum differs (it must still load) and replace
            a different existing file (kept as a ``.bak``).
        downloader: ``downloader(url, path, timeout)`` writing the download to ``path``;
            defaults to urllib. Tests pass a fake one.

    Returns:
        :class:`Installed`, saying what was done.

    Raises:
        KeyError: unknown name (with the closest match) or a dataset with no file.
        ManualDownloadRequired: no direct download (``credit_default``, ``gmsc``); the
            message names the page, the file to download and the import command.
        DownloadError: the download failed (offline, timeout, HTTP error) or its content
            is not the expected format; the message says where to put the file by hand.
        ChecksumMismatch: the converted download differs from the reference copy.
        ValueError: a different file is already installed (without ``force``).
    """
    src = source(name)
    directory = _resolve_dir(data_dir)
    url = download_url(src)
    if url is None:
        raise ManualDownloadRequired(_manual_message(src, directory))
    dest = directory / src.file_name
    if not force and dest.is_file() and sha256_of(dest) == src.sha256:
        return Installed(name=src.name, path=dest, sha256=src.sha256, checksum_ok=True, action="unchanged", origin=str(dest))
    problem = check_real(timeout, "timeout", "fetch", 0, low_open=True, kind="a number")
    if problem:
        raise ValueError(problem)
    download = _urllib_download if downloader is None else downloader
    with tempfile.TemporaryDirectory(prefix="recourse-ray-fetch-") as tmp:
        raw_path = Path(tmp) / src.raw_name
        logger.info("downloading %s from %s", src.name, url)
        try:
            download(url, raw_path, float(timeout))
            raw = raw_path.read_bytes()
        except DownloadError as exc:
            raise DownloadError(f"Could not download {src.name!r}: {exc}. {_where_to_put(src, directory)}") from None
        except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DownloadError(
                f"Could not download {src.name!r} from {url} ({type(exc).__name__}: {reason}); "
                f"are you offline? {_where_to_put(src, directory)}"
            ) from None
    try:
        content = src.convert(raw) if src.convert is not None else raw
    except ValueError as exc:
        raise DownloadError(
            f"The download of {src.name!r} from {url} is not the expected {src.raw_name} ({exc}). "
            f"{_where_to_put(src, directory)}"
        ) from None
    origin = f"{url}, converted from {src.raw_name}" if src.convert is not None else url
    return _install(src, content, directory, force=force, origin=origin)


def import_file(
    name: str,
    path: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    force: bool = False,
) -> Installed:
    """Install a local file as the dataset's CSV in the data directory.

    ``path`` may be our CSV (same header as the reference copy) or a raw download the
    source's converter recognises (``cal_housing.tgz`` / ``cal_housing.data``,
    ``german.data-numeric``, the credit default sheet saved as CSV, Kaggle's
    ``cs-training.csv``). A CSV whose checksum differs is also tried through the
    converter, which normalises value formatting (e.g. ``20000.0`` -> ``20000``).

    Args:
        name: a dataset with a file (see :data:`SOURCES`).
        path: the local file.
        data_dir: where to install; defaults to :func:`recourse_ray.data.get_data_dir`.
        force: install a file whose checksum differs from the reference copy (it must
            still load through the named loader) and replace a different existing file
            (kept as ``<file>.<sha256 prefix>.bak``).

    Returns:
        :class:`Installed`, saying what was done.

    Raises:
        KeyError: unknown name (with the closest match) or a dataset with no file.
        ValueError: missing or unreadable ``path``, a format neither our CSV nor the raw
            download, a different file already installed (without ``force``), a file
            that does not load (with ``force``).
        ChecksumMismatch: the checksum differs and ``force`` is False; the message shows
            both checksums.
    """
    src = source(name)
    directory = _resolve_dir(data_dir)
    file = Path(path).expanduser()
    if not file.is_file():
        what = "is a directory, not a file" if file.is_dir() else "does not exist"
        raise ValueError(f"Cannot import {src.name!r}: {file} {what}.")
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ValueError(f"Cannot import {src.name!r}: cannot read {file} ({exc.strerror or exc}).") from None
    candidates: list[tuple[str, bytes]] = []
    first_line = raw.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8-sig", errors="replace")
    if first_line == src.header:
        candidates.append((str(file), raw))
    conversion_error = None
    if src.convert is not None and not (candidates and sha256_of(raw) == src.sha256):
        try:
            candidates.append((f"converted from {file}", src.convert(raw)))
        except ValueError as exc:
            conversion_error = exc
    if not candidates:
        found = first_line if len(first_line) <= 120 else first_line[:117] + "..."
        raw_hint = f" nor a {src.raw_name} this package can convert ({conversion_error})" if src.convert else ""
        raise ValueError(
            f"Cannot import {src.name!r} from {file}: it is neither our CSV (first line {src.header!r}; found "
            f"{found!r}){raw_hint}."
        )
    origin, content = next(((o, c) for o, c in candidates if sha256_of(c) == src.sha256), candidates[-1])
    return _install(src, content, directory, force=force, origin=origin)


# ---------------------------------------------------------------------------------------
# Describing datasets

@dataclass(frozen=True, kw_only=True)
class DatasetInfo:
    """What is known about a dataset (see :func:`info`).

    Attributes:
        name: the dataset.
        kind: ``"file"`` (a CSV with a :class:`Source`: real-world or published synthetic) or ``"generated"``.
        rows: rows after preprocessing but before balancing (None when absent/unloadable).
        n_features: feature columns after preprocessing (one-hot columns counted).
        class_counts: (rows of class 0, rows of class 1) before balancing.
        feature_names: the feature columns.
        source: the canonical page (files) or the loader's provenance string.
        description: one line on the data.
        path: the file the loader reads (files only).
        present: whether that file exists (files only; True for generated data).
        checksum: ``"ok"``, ``"mismatch"`` or ``"absent"`` (files); None for generated data.
        sha256: the file's SHA-256 when present.
        expected_sha256: the reference SHA-256 (files only).
        rows_in_file: data lines in the file, before preprocessing (files only).
        error: why a present file did not load, else None.
    """

    name: str
    kind: str
    rows: int | None
    n_features: int | None
    class_counts: tuple[int, int] | None
    feature_names: tuple[str, ...]
    source: str
    description: str
    path: Path | None = None
    present: bool = True
    checksum: str | None = None
    sha256: str | None = None
    expected_sha256: str | None = None
    rows_in_file: int | None = None
    error: str | None = None

    @property
    def balanced_rows(self) -> int | None:
        """Rows the loader returns by default (both classes undersampled to the smaller one)."""
        return None if self.class_counts is None else 2 * min(self.class_counts)


def info(name: str, *, data_dir: str | os.PathLike | None = None) -> DatasetInfo:
    """Describe a registered dataset: rows, features, class balance, source, file status.

    For a real-world dataset the file is checked against the reference checksum and, if
    present, loaded without balancing; a file that fails to load is described, not
    raised (``error``). Other datasets are loaded with their defaults (seed 0).

    Raises:
        KeyError: unknown name (with the closest match).
        ValueError: a dataset without a source that does not load with defaults
            (e.g. ``csv``, which needs a path).
    """
    if not isinstance(name, str) or not (name in SOURCES or name in _data.DATASETS or is_import_path(name)):
        raise KeyError(_data.DATASETS.unknown_message(name))
    if name not in SOURCES:
        ds = _data.load(name, seed=0)
        return DatasetInfo(
            name=name, kind="generated", rows=ds.n_samples, n_features=ds.n_features, class_counts=ds.class_counts(),
            feature_names=tuple(ds.feature_names), source=ds.source,
            description=(_data.DATASETS.get(name).__doc__ or "").strip().split("\n")[0],
        )
    src = SOURCES[name]
    directory = _resolve_dir(data_dir)
    path = directory / src.file_name
    common = dict(
        name=name, kind="file", source=src.page, description=src.description, path=path,
        expected_sha256=src.sha256,
    )
    if not path.is_file():
        return DatasetInfo(
            rows=None, n_features=None, class_counts=None, feature_names=(), present=False, checksum="absent", **common
        )
    content = path.read_bytes()
    digest = sha256_of(content)
    lines = content.count(b"\n") + (0 if content.endswith(b"\n") else 1)
    file_facts = dict(
        present=True, checksum="ok" if digest == src.sha256 else "mismatch", sha256=digest,
        rows_in_file=max(lines - 1, 0),
    )
    try:
        ds = _load_unbalanced(name, directory)
    except (ValueError, TypeError) as exc:
        return DatasetInfo(
            rows=None, n_features=None, class_counts=None, feature_names=(),
            error=exc.args[0] if exc.args else str(exc), **file_facts, **common,
        )
    return DatasetInfo(
        rows=ds.n_samples, n_features=ds.n_features, class_counts=ds.class_counts(),
        feature_names=tuple(ds.feature_names), **file_facts, **common,
    )
