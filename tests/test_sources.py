"""Data sources: converters, fetch (with fake downloaders), import, info and the ``datasets`` CLI.

No test reaches the network: every download goes through an injected downloader, and
an autouse fixture makes the real one (and urllib) fail loudly if anything calls it.
Tests that rebuild or import the reference CSVs need ``../shared/data/tabular`` and are
skipped when it is absent.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import socket
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_TABULAR, requires_tabular_data
from recourse_ray.cli import main
from recourse_ray.data import sources
from recourse_ray.data.synthetic import PUBLISHED_FILES
from recourse_ray.data.tabular import FILES

#: The real-world sources (the published synthetic ones are tested in test_data_published.py).
NAMES = sorted(FILES)


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _shared(name: str) -> bytes:
    return (SHARED_TABULAR / FILES[name]).read_bytes()


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any attempt at a real download fails the test instead of reaching the network."""

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(sources, "_urllib_download", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _downloader_serving(content: bytes, calls: list | None = None):
    def download(url: str, path: Path, timeout: float) -> None:
        if calls is not None:
            calls.append((url, timeout))
        path.write_bytes(content)

    return download


# ---------------------------------------------------------------------------------------
# Raw files rebuilt from the reference CSVs (the inverse of each converter)

def _raw_german(csv_bytes: bytes) -> bytes:
    lines = csv_bytes.decode().splitlines()[1:]
    return "".join("".join(f"{int(c):4d}" for c in line.split(",")) + " \n" for line in lines).encode()


def _raw_california_rows(csv_bytes: bytes) -> list[tuple[float, ...]]:
    """cal_housing.data rows (longitude, latitude, age, rooms, bedrooms, population, households, income, value)."""
    rows = []
    for line in csv_bytes.decode().splitlines()[1:]:
        income, age, rooms, bedrooms, population, occupancy, lat, lon, target = map(float, line.split(","))
        households = round(population / occupancy)
        rows.append((lon, lat, age, round(rooms * households), round(bedrooms * households), population,
                     households, income, round(target * 100000)))
    return rows


def _raw_california(rows) -> bytes:
    return "".join(",".join(f"{v:.6f}" for v in row) + "\n" for row in rows).encode()


def _tgz(member: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        entry = tarfile.TarInfo(member)
        entry.size = len(content)
        archive.addfile(entry, io.BytesIO(content))
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------
# The registry

def test_sources_cover_the_named_file_datasets():
    assert sorted(sources.SOURCES) == sorted(FILES | PUBLISHED_FILES)
    for name, src in sources.SOURCES.items():
        assert src.file_name == (FILES | PUBLISHED_FILES)[name]
        assert len(src.sha256) == 64 and int(src.sha256, 16) >= 0
        assert src.page.startswith("https://")
        assert (src.download_url is None) == (src.manual is not None)
    assert {n for n, s in sources.SOURCES.items() if s.download_url} == {"california_housing", "german_credit", *PUBLISHED_FILES}


@requires_tabular_data
@pytest.mark.parametrize("name", NAMES)
def test_reference_header_and_checksum_match_the_shared_csv(name):
    content = _shared(name)
    assert content.split(b"\n", 1)[0].decode() == sources.SOURCES[name].header
    assert _sha(content) == sources.SOURCES[name].sha256


def test_unknown_and_fileless_names():
    with pytest.raises(KeyError, match="Did you mean 'gmsc'"):
        sources.source("gmcs")
    with pytest.raises(KeyError, match="'moons' has no file to fetch or import"):
        sources.source("moons")
    with pytest.raises(KeyError, match="Did you mean 'german_credit'"):
        sources.import_file("german_credt", "x.csv")
    with pytest.raises(KeyError, match="Did you mean 'moons'"):
        sources.info("moonz")


# ---------------------------------------------------------------------------------------
# Converters

@requires_tabular_data
def test_german_converter_reproduces_the_reference_csv_byte_for_byte():
    raw = _raw_german(_shared("german_credit"))
    assert raw.count(b"\n") == 1000 and b"," not in raw
    assert _sha(sources.convert_german_credit(raw)) == sources.SOURCES["german_credit"].sha256


def test_german_converter_rejects_bad_rows():
    good = " ".join(["1"] * 25) + "\n"
    assert sources.convert_german_credit(good.encode()) == (",".join(map(str, range(25))) + "\n" + ",".join(["1"] * 25) + "\n").encode()
    with pytest.raises(ValueError, match="line 2 of german.data-numeric has 24 values, expected 25"):
        sources.convert_german_credit((good + " ".join(["1"] * 24) + "\n").encode())
    with pytest.raises(ValueError, match="non-integer"):
        sources.convert_german_credit((" ".join(["1.5"] * 25) + "\n").encode())


def test_california_converter_on_hand_made_rows():
    raw = (
        b"-122.230000,37.880000,41.000000,880.000000,129.000000,322.000000,126.000000,8.325200,452600.000000\n"
        b"-120.000000,35.500000,10.000000,1000.000000,250.000000,800.000000,200.000000,2.000000,150000.000000\n"
    )
    lines = sources.convert_california_housing(raw).decode().splitlines()
    assert lines[0] == "MedInc,HouseAge,AveRooms,AveBedrms,Population,AveOccup,Latitude,Longitude,target"
    # Row 2 by hand: rooms 1000/200 = 5, bedrooms 250/200 = 1.25, occupancy 800/200 = 4, value 1.5 (100k USD).
    assert lines[2] == "2.0,10.0,5.0,1.25,800.0,4.0,35.5,-120.0,1.5"
    first = [float(v) for v in lines[1].split(",")]
    expected = [8.3252, 41.0, 880 / 126, 129 / 126, 322.0, 322 / 126, 37.88, -122.23, 4.526]
    np.testing.assert_allclose(first, expected, rtol=0, atol=1e-12)
    # The archive as scikit-learn downloads it gives the same CSV.
    assert sources.convert_california_housing(_tgz("CaliforniaHousing/cal_housing.data", raw)) == "\n".join(lines).encode() + b"\n"
    with pytest.raises(ValueError, match="has 8 values, expected 9"):
        sources.convert_california_housing(b"1,2,3,4,5,6,7,8\n")
    with pytest.raises(ValueError, match="holds no cal_housing.data"):
        sources.convert_california_housing(_tgz("other.txt", raw))


@requires_tabular_data
def test_california_round_trip_from_the_reference_csv():
    reference = _shared("california_housing")
    rows = _raw_california_rows(reference)
    # Rebuilt raw rows are whole numbers of rooms, bedrooms, households and dollars.
    some = np.asarray(rows[:50])
    np.testing.assert_allclose(some[:, [3, 4, 6, 8]], np.round(some[:, [3, 4, 6, 8]]), atol=0)
    converted = sources.convert_california_housing(_tgz("CaliforniaHousing/cal_housing.data", _raw_california(rows)))
    got = np.loadtxt(io.StringIO(converted.decode()), delimiter=",", skiprows=1, max_rows=200)
    want = np.loadtxt(io.StringIO(reference.decode()), delimiter=",", skiprows=1, max_rows=200)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert _sha(converted) == sources.SOURCES["california_housing"].sha256  # and in fact byte for byte


def _xls_export(reference: bytes) -> bytes:
    """The UCI workbook's sheet saved as CSV by a spreadsheet program (two header rows, CRLF)."""
    lines = reference.decode().splitlines()
    names = [c.strip('"') for c in lines[0].split(",")]
    names[-1] = "default payment next month"
    top = [""] + [f"X{i}" for i in range(1, 24)] + ["Y"]
    body = [",".join(str(int(float(c))) for c in line.split(",")) for line in lines[1:]]
    return ("\r\n".join([",".join(top), ",".join(names)] + body) + "\r\n").encode("utf-8-sig")


def _kaggle_copy(reference: bytes) -> bytes:
    """Kaggle's UCI_Credit_Card.csv: unquoted header, amounts written as floats."""
    lines = reference.decode().splitlines()
    header = lines[0].replace('"', "")
    body = [",".join(c if i in (0, 2, 3, 4, 5, 24) else f"{float(c):.1f}" for i, c in enumerate(line.split(","))) for line in lines[1:]]
    return ("\n".join([header] + body) + "\n").encode()


@requires_tabular_data
@pytest.mark.parametrize("make_raw", [_xls_export, _kaggle_copy], ids=["xls-sheet-as-csv", "kaggle-csv"])
def test_credit_default_converter_reproduces_the_reference_csv(make_raw):
    reference = _shared("credit_default")
    raw = make_raw(reference)
    assert _sha(raw) != sources.SOURCES["credit_default"].sha256
    assert _sha(sources.convert_credit_default(raw)) == sources.SOURCES["credit_default"].sha256


def test_credit_default_converter_refuses_the_workbook_and_odd_columns():
    with pytest.raises(ValueError, match="Excel workbook itself"):
        sources.convert_credit_default(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 64)
    with pytest.raises(ValueError, match="no header row starting with 'ID'"):
        sources.convert_credit_default(b"a,b\n1,2\n")
    header = ",".join(sources._CREDIT_COLUMNS)
    with pytest.raises(ValueError, match="non-integer"):
        sources.convert_credit_default((header + "\n" + ",".join(["1.5"] * 25) + "\n").encode())
    # R's write.csv number format: scientific only when shorter.
    assert [sources._r_number(v) for v in (500000, 120000, 20000, 1000000, -100000, 0, 7)] == [
        "5e+05", "120000", "20000", "1e+06", "-1e+05", "0", "7"]


_KAGGLE_HEADER = '"",SeriousDlqin2yrs,' + ",".join(sources._GMSC_FEATURES)


def test_gmsc_converter_on_a_hand_made_file():
    rows = [
        "1,1,0.766126609,45,2,0.802982129,9120,13,0,6,0,2",
        "2,0,0.957151019,40,0,0.121876201,2600,4,0,0,0,1",
        "3,0,0.65818014,38,1,0.085113375,3042,2,1,0,0,0",
        "4,0,1.6e-05,30,0,0.036049682,3300,5,0,0,0,0",
        "5,1,0.9999999,49,1,5710,NA,7,0,1,0,NA",  # missing: dropped
        "6,0,0,74,0,1607,3500,3,0,1,0,1",
        "7,1,0.213178682,57,0,5e-06,7000,8,0,1,0,0",
    ]
    raw = ("\n".join([_KAGGLE_HEADER] + rows) + "\n").encode()
    out = sources.convert_gmsc(raw, seed=0).decode().splitlines()
    assert out[0] == sources.SOURCES["gmsc"].header
    table = [line.split(",") for line in out[1:]]
    targets = [int(r[0]) for r in table]
    assert targets.count(0) == targets.count(1) == 2  # 2 delinquent rows kept, 4 others undersampled to 2
    delinquent = [r for r in table if r[0] == "0"]
    assert delinquent == [
        ["0", "0.766126609", "45", "2", "0.802982129", "9120", "13", "0", "6", "0", "2"],
        ["0", "0.213178682", "57", "0", "5.0e-6", "7000", "8", "0", "1", "0", "0"],
    ]
    every_other = {  # the 4 rows that may be drawn, formatted as in the reference copy
        "1,0.957151019,40,0,0.121876201,2600,4,0,0,0,1", "1,0.65818014,38,1,0.085113375,3042,2,1,0,0,0",
        "1,1.6e-5,30,0,0.036049682,3300,5,0,0,0,0", "1,0.0,74,0,1607.0,3500,3,0,1,0,1",
    }
    assert {line for line in out[1:] if line.startswith("1,")} <= every_other
    assert sources.convert_gmsc(raw, seed=0) == sources.convert_gmsc(raw, seed=0)
    draws = {sources.convert_gmsc(raw, seed=s) for s in range(8)}
    assert len(draws) > 1  # the undersample depends on the seed
    with pytest.raises(ValueError, match="no column"):
        sources.convert_gmsc(b"target,a\n1,2\n")


@requires_tabular_data
def test_gmsc_round_trip_from_the_reference_csv():
    """A cs-training.csv holding exactly the reference rows (plus rows with NA) converts back to the reference."""
    lines = _shared("gmsc").decode().splitlines()[1:]
    raw_rows = []
    for i, line in enumerate(lines, start=1):
        cells = line.split(",")
        ratio, debt = (repr(float(cells[j])) for j in (1, 4))
        ratio = "0" if float(cells[1]) == 0 else ratio  # Kaggle writes whole numbers without ".0"
        raw_rows.append(",".join([str(i), str(1 - int(cells[0])), ratio, cells[2], cells[3], debt] + cells[5:]))
        if i % 1000 == 0:  # rows with missing values are dropped, whatever their class
            raw_rows.append(f"{i}x,{i % 2},0.5,40,0,0.3,NA,4,0,1,0,NA")
    raw = ("\n".join([_KAGGLE_HEADER] + raw_rows) + "\n").encode()
    assert _sha(sources.convert_gmsc(raw)) == sources.SOURCES["gmsc"].sha256


# ---------------------------------------------------------------------------------------
# import_file

@requires_tabular_data
@pytest.mark.parametrize("name", NAMES)
def test_import_each_reference_csv_verifies_and_loads(tmp_path, name):
    data_dir = tmp_path / "data"
    done = sources.import_file(name, SHARED_TABULAR / FILES[name], data_dir=data_dir)
    assert (done.action, done.checksum_ok, done.path) == ("written", True, data_dir / FILES[name])
    assert done.path.read_bytes() == _shared(name)
    assert sorted(p.name for p in data_dir.iterdir()) == [FILES[name]]  # no staging leftovers
    described = sources.info(name, data_dir=data_dir)
    assert (described.present, described.checksum, described.error) == (True, "ok", None)
    assert described.rows > 0 and described.n_features > 0 and min(described.class_counts) > 0
    again = sources.import_file(name, SHARED_TABULAR / FILES[name], data_dir=data_dir)
    assert again.action == "unchanged" and "nothing changed" in again.summary()


@requires_tabular_data
def test_import_converts_raw_downloads(tmp_path):
    raw = tmp_path / "german.data-numeric"
    raw.write_bytes(_raw_german(_shared("german_credit")))
    done = sources.import_file("german_credit", raw, data_dir=tmp_path / "data")
    assert done.checksum_ok and done.origin == f"converted from {raw}"
    assert done.path.read_bytes() == _shared("german_credit")


def _modified_german(tmp_path: Path, *, label: str = "1") -> Path:
    lines = _shared("german_credit").decode().splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + "," + label  # row 1: 'good' (1) -> 'bad' (2) or other
    path = tmp_path / "modified.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@requires_tabular_data
def test_import_of_a_modified_file_is_refused_then_forced(tmp_path):
    data_dir = tmp_path / "data"
    modified = _modified_german(tmp_path, label="2")
    actual = _sha(modified.read_bytes())
    expected = sources.SOURCES["german_credit"].sha256
    with pytest.raises(sources.ChecksumMismatch, match=f"SHA-256 {actual}, expected {expected}") as err:
        sources.import_file("german_credit", modified, data_dir=data_dir)
    assert (err.value.actual, err.value.expected) == (actual, expected)
    assert not data_dir.exists()  # nothing written
    done = sources.import_file("german_credit", modified, data_dir=data_dir, force=True)
    assert (done.action, done.checksum_ok, done.sha256) == ("written", False, actual)
    assert "MISMATCH" in done.summary()
    described = sources.info("german_credit", data_dir=data_dir)
    assert described.checksum == "mismatch" and described.class_counts == (301, 699)


@requires_tabular_data
def test_force_still_requires_the_file_to_load(tmp_path):
    data_dir = tmp_path / "data"
    lines = _shared("german_credit").decode().splitlines()
    lines[1] = "A11" + lines[1][1:]  # a text code in a numeric feature column
    broken = tmp_path / "broken.csv"
    broken.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="does not load as this dataset either.* non-numeric columns '0'"):
        sources.import_file("german_credit", broken, data_dir=data_dir, force=True)
    assert list(data_dir.iterdir()) == []  # the staging folder was removed


@requires_tabular_data
def test_an_existing_different_file_is_never_replaced_silently(tmp_path):
    data_dir = tmp_path / "data"
    modified = _modified_german(tmp_path, label="2")
    sources.import_file("german_credit", modified, data_dir=data_dir, force=True)
    old = modified.read_bytes()
    with pytest.raises(ValueError, match="already exists with different contents .* not the reference checksum"):
        sources.import_file("german_credit", SHARED_TABULAR / "german_credit.csv", data_dir=data_dir)
    assert (data_dir / "german_credit.csv").read_bytes() == old
    done = sources.import_file("german_credit", SHARED_TABULAR / "german_credit.csv", data_dir=data_dir, force=True)
    assert done.action == "replaced" and done.checksum_ok
    assert done.backup == data_dir / f"german_credit.csv.{_sha(old)[:12]}.bak"
    assert done.backup.read_bytes() == old and done.path.read_bytes() == _shared("german_credit")
    assert str(done.backup) in done.summary()


def test_import_refuses_missing_and_unrecognised_files(tmp_path):
    with pytest.raises(ValueError, match="nothere.csv does not exist"):
        sources.import_file("german_credit", tmp_path / "nothere.csv", data_dir=tmp_path)
    with pytest.raises(ValueError, match="is a directory"):
        sources.import_file("german_credit", tmp_path, data_dir=tmp_path)
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="neither our CSV .* nor a german.data-numeric this package can convert"):
        sources.import_file("german_credit", other, data_dir=tmp_path / "data")
    assert not (tmp_path / "data").exists()


# ---------------------------------------------------------------------------------------
# fetch

@pytest.mark.parametrize(
    "failure",
    [
        urllib.error.URLError(socket.gaierror(-2, "Name or service not known")),
        TimeoutError("timed out"),
        ConnectionRefusedError(111, "Connection refused"),
        http.client.RemoteDisconnected("closed"),
        urllib.error.HTTPError("https://x", 503, "Service Unavailable", {}, None),
    ],
    ids=["dns", "timeout", "refused", "disconnected", "http-503"],
)
def test_fetch_offline_fails_fast_saying_where_to_put_the_file(tmp_path, failure):
    def offline(url, path, timeout):
        raise failure

    data_dir = tmp_path / "data"
    start = time.perf_counter()
    with pytest.raises(sources.DownloadError) as err:
        sources.fetch("german_credit", data_dir=data_dir, downloader=offline, timeout=0.5)
    assert time.perf_counter() - start < 2.0
    message = str(err.value)
    for part in (str(data_dir), "german_credit.csv", "RECOURSE_RAY_DATA", "recourse-ray datasets import german_credit",
                 sources.SOURCES["german_credit"].download_url, sources.SOURCES["german_credit"].sha256):
        assert part in message
    assert not data_dir.exists()


@requires_tabular_data
def test_fetch_with_a_fake_download_converts_verifies_and_installs(tmp_path):
    calls: list = []
    raw = _tgz("CaliforniaHousing/cal_housing.data", _raw_california(_raw_california_rows(_shared("california_housing"))))
    done = sources.fetch("california_housing", data_dir=tmp_path, downloader=_downloader_serving(raw, calls), timeout=3)
    assert calls == [(sources.SOURCES["california_housing"].download_url, 3.0)]
    assert (done.action, done.checksum_ok) == ("written", True)
    assert done.path.read_bytes() == _shared("california_housing")
    # Present and verified: no second download.
    again = sources.fetch("california_housing", data_dir=tmp_path, downloader=_downloader_serving(b"", calls))
    assert again.action == "unchanged" and len(calls) == 1


def test_fetch_rejects_unexpected_content_and_manual_sources(tmp_path):
    with pytest.raises(sources.DownloadError, match="not the expected german.data-numeric"):
        sources.fetch("german_credit", data_dir=tmp_path, downloader=_downloader_serving(b"<html>login</html>\n"))
    calls: list = []
    for name, page, raw_name in (
        ("credit_default", "https://archive.ics.uci.edu/dataset/350", "default of credit card clients.xls"),
        ("gmsc", "https://www.kaggle.com/c/GiveMeSomeCredit", "cs-training.csv"),
    ):
        with pytest.raises(sources.ManualDownloadRequired) as err:
            sources.fetch(name, data_dir=tmp_path, downloader=_downloader_serving(b"", calls))
        message = str(err.value)
        for part in (page, raw_name, f"recourse-ray datasets import {name}", FILES[name], str(tmp_path), "RECOURSE_RAY_DATA"):
            assert part in message
    assert calls == [] and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="'timeout' parameter of fetch"):
        sources.fetch("german_credit", data_dir=tmp_path, timeout=0)


@requires_tabular_data
def test_fetch_checksum_mismatch_is_refused_unless_forced(tmp_path):
    raw = _raw_german(_shared("german_credit")).replace(b"   1   6   4  12", b"   2   6   4  12", 1)
    with pytest.raises(sources.ChecksumMismatch, match="expected " + sources.SOURCES["german_credit"].sha256):
        sources.fetch("german_credit", data_dir=tmp_path, downloader=_downloader_serving(raw))
    done = sources.fetch("german_credit", data_dir=tmp_path, downloader=_downloader_serving(raw), force=True)
    assert done.action == "written" and not done.checksum_ok


# ---------------------------------------------------------------------------------------
# info

def test_info_generated_and_absent(tmp_path):
    moons = sources.info("moons")
    assert (moons.kind, moons.rows, moons.n_features, moons.class_counts, moons.checksum) == ("generated", 1000, 2, (500, 500), None)
    absent = sources.info("gmsc", data_dir=tmp_path)
    assert (absent.present, absent.checksum, absent.rows, absent.path) == (False, "absent", None, tmp_path / FILES["gmsc"])
    assert absent.source == sources.SOURCES["gmsc"].page


def test_info_of_a_file_that_does_not_load(tmp_path):
    (tmp_path / "german_credit.csv").write_text("0,1\n1,2\n")
    described = sources.info("german_credit", data_dir=tmp_path)
    assert (described.present, described.checksum, described.rows) == (True, "mismatch", None)
    assert "target column '24'" in described.error


def test_info_on_another_directory_leaves_the_data_dir_alone(tmp_path):
    import recourse_ray.data as rd

    (tmp_path / "german_credit.csv").write_text("0,1\n1,2\n")
    with rd.data_dir(tmp_path / "elsewhere"):
        sources.info("german_credit", data_dir=tmp_path)  # loads through the named loader from tmp_path
        assert rd.get_data_dir() == tmp_path / "elsewhere"


@requires_tabular_data
def test_info_of_the_reference_files(tabular_dir):
    described = sources.info("credit_default")
    assert described.path == tabular_dir / FILES["credit_default"]
    assert (described.rows, described.class_counts, described.rows_in_file, described.balanced_rows) == (30000, (6636, 23364), 30000, 13272)
    assert described.n_features == 33 and "SEX=2" in described.feature_names


# ---------------------------------------------------------------------------------------
# The CLI

@requires_tabular_data
def test_cli_info(tabular_dir, tmp_path, capsys):
    assert main(["datasets", "info", "german_credit"]) == 0
    out = capsys.readouterr().out
    assert "german_credit: 600 rows, 24 features, classes 0/1 = 300/300" in out
    assert "before balancing: 1000 rows, classes 0/1 = 300/700" in out
    assert f"file: {tabular_dir / 'german_credit.csv'} (present, checksum ok)" in out
    assert f"source: {sources.SOURCES['german_credit'].page}" in out
    assert main(["datasets", "info", "german_credit", "--data-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "(absent)" in captured.out and "recourse-ray datasets fetch german_credit" in captured.err


def test_cli_info_generated_and_unknown(capsys):
    assert main(["datasets", "info", "moons"]) == 0
    out = capsys.readouterr().out
    assert "moons: 1000 rows, 2 features, classes 0/1 = 500/500" in out and "source: synthetic" in out
    assert main(["datasets", "info", "gmcs"]) == 2
    assert "Did you mean 'gmsc'" in capsys.readouterr().err


@requires_tabular_data
def test_cli_import(tmp_path, capsys):
    data_dir = tmp_path / "data"
    argv = ["datasets", "import", "german_credit", str(SHARED_TABULAR / "german_credit.csv"), "--data-dir", str(data_dir)]
    assert main(argv) == 0
    assert f"written {data_dir / 'german_credit.csv'}" in capsys.readouterr().out
    assert main(argv) == 0
    assert "nothing changed" in capsys.readouterr().out
    modified = _modified_german(tmp_path, label="2")
    argv = ["datasets", "import", "german_credit", str(modified), "--data-dir", str(tmp_path / "other")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert _sha(modified.read_bytes()) in err and sources.SOURCES["german_credit"].sha256 in err
    assert main(argv + ["--force"]) == 0
    assert "MISMATCH accepted with force" in capsys.readouterr().out


def test_cli_import_bad_input(tmp_path, capsys):
    assert main(["datasets", "import", "german_credit", str(tmp_path / "nothere.csv"), "--data-dir", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["datasets", "import", "german_credit"]) == 2
    assert "needs a PATH to import" in capsys.readouterr().err
    assert main(["datasets", "import", "moons", str(tmp_path)]) == 2
    assert "has no file to fetch or import" in capsys.readouterr().err
    assert main(["datasets", "list", "moons"]) == 2
    assert "takes 0 argument(s)" in capsys.readouterr().err


def test_cli_fetch(tmp_path, monkeypatch, capsys):
    def offline(url, path, timeout):
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(sources, "_urllib_download", offline)
    assert main(["datasets", "fetch", "german_credit", "--data-dir", str(tmp_path), "--timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert "are you offline?" in err and "recourse-ray datasets import german_credit" in err and str(tmp_path) in err
    assert main(["datasets", "fetch", "gmsc", "--data-dir", str(tmp_path)]) == 2
    assert "Kaggle requires a login" in capsys.readouterr().err
    assert main(["datasets", "fetch", "german_credt"]) == 2
    assert "Did you mean 'german_credit'" in capsys.readouterr().err
    assert main(["datasets", "fetch", "german_credit", "--timeout", "0"]) == 2
    assert "The '--timeout' parameter of recourse-ray datasets must be a number in the range (0, inf). Got 0.0 instead." in capsys.readouterr().err
    monkeypatch.setattr(sources, "_urllib_download", _downloader_serving((" ".join(["1"] * 25) + "\n").encode()))
    assert main(["datasets", "fetch", "german_credit", "--data-dir", str(tmp_path)]) == 2  # converted, but not the reference
    assert "does not match the reference copy" in capsys.readouterr().err
