"""The study's published synthetic data: loaders, fetch from a local server, info, sweeps.

The files are the shared copies in ``../shared/data/synthetic`` (tests skip when the
folder is absent). Fetching is tested against a ``http.server`` on 127.0.0.1 serving a
folder, reached through ``RECOURSE_RAY_STUDY_DATA_URL``; nothing reaches the internet.
Expected values come from the files themselves (the csv module, hashlib), never from
the code under test.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

import recourse_ray.data as rd
from recourse_ray.cli import main
from recourse_ray.data import sources, synthetic

ROOT = Path(__file__).resolve().parents[1]
SHARED_SYNTHETIC = ROOT.parent / "shared" / "data" / "synthetic"
STUDY = {
    "study_overlapping": "overlapping.csv",
    "study_linearly_separable": "linearly_separable.csv",
    "study_circles": "circles.csv",
    "study_moons": "moons.csv",
}
# The checksums of ../shared/data/synthetic/README.md, written out here on purpose.
CHECKSUMS = {
    "overlapping.csv": "c82f7efcde6fa37cd57235e97be62263330997c79cc48e4940c35e488b016bff",
    "linearly_separable.csv": "7b28685aec3eddef158c8be02b0a8af1d81afc7ae55c431c3177efec20fc3da3",
    "moons.csv": "0aa211fe1a9634b6d123213c864f585493d36d0304d886dc73c1b4cd0130a20e",
    "circles.csv": "b49f6736da92bed65207eea45af02a7c0e6863d3521e6c2c10cdf24800628c20",
}
PAPER_SWEEPS = ("paper-main.yaml", "paper-mitigation.yaml", "paper-latent.yaml")

requires_published = pytest.mark.skipif(
    not SHARED_SYNTHETIC.is_dir(), reason=f"the published synthetic CSVs are absent ({SHARED_SYNTHETIC})"
)


def _read_by_hand(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["x1", "x2", "target"]
    X = np.array([[float(r[0]), float(r[1])] for r in rows[1:]])
    y = np.array([int(r[2]) for r in rows[1:]])
    return X, y


@pytest.fixture
def published_dir():
    """The shared published CSVs as the data directory for the test."""
    with rd.data_dir(SHARED_SYNTHETIC):
        yield SHARED_SYNTHETIC


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local HTTP server for a folder (``served``), made the published files' base URL."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    requests: list[str] = []
    original = sources._urllib_download

    def counting(url, path, timeout):
        requests.append(url)
        assert url.startswith("http://127.0.0.1:"), f"a test tried to reach {url}"
        original(url, path, timeout)

    monkeypatch.setattr(sources, "_urllib_download", counting)
    monkeypatch.setenv(sources.STUDY_URL_ENV, f"http://127.0.0.1:{httpd.server_port}/data/")
    (served / "data").mkdir()
    try:
        yield served / "data", requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


# ---------------------------------------------------------------------------------------
# The registry


def test_study_presets_are_registered_with_sources():
    assert set(STUDY) <= set(rd.names())
    assert synthetic.PUBLISHED_FILES == STUDY
    for name, file_name in STUDY.items():
        src = sources.SOURCES[name]
        assert (src.file_name, src.raw_name, src.sha256, src.header) == (file_name, file_name, CHECKSUMS[file_name], "x1,x2,target")
        assert src.download_url == (
            "https://raw.githubusercontent.com/pat-alt/endogenous-macrodynamics-in-algorithmic-recourse/0df3f498320ae3621c0d4efb9f278b10523c5cd8/"
            f"dev/artifacts/upload/data/synthetic/{file_name}"
        )
        assert src.convert is None and src.manual is None
    assert sources.GROUPS["study"] == tuple(STUDY)


def test_download_url_override(monkeypatch):
    src = sources.SOURCES["study_moons"]
    monkeypatch.delenv(sources.STUDY_URL_ENV, raising=False)
    assert sources.download_url(src) == src.download_url
    monkeypatch.setenv(sources.STUDY_URL_ENV, "http://mirror.example/base/")
    assert sources.download_url(src) == "http://mirror.example/base/moons.csv"
    # Only the published files follow the variable.
    assert sources.download_url(sources.SOURCES["german_credit"]) == sources.SOURCES["german_credit"].download_url


def test_data_file(tmp_path):
    assert sources.data_file("study_circles", data_dir=tmp_path) == tmp_path / "circles.csv"
    assert sources.data_file("german_credit", data_dir=tmp_path) == tmp_path / "german_credit.csv"
    assert sources.data_file("circles") is None


def test_generated_name_points_to_the_published_one():
    with pytest.raises(KeyError, match=r"'overlapping' has no file.*'study_overlapping' \(recourse-ray datasets fetch study_overlapping\)"):
        sources.source("overlapping")


# ---------------------------------------------------------------------------------------
# Loading the shared copies


@requires_published
@pytest.mark.parametrize("name", sorted(STUDY))
def test_shared_copies_have_the_reference_checksums(name):
    content = (SHARED_SYNTHETIC / STUDY[name]).read_bytes()
    assert hashlib.sha256(content).hexdigest() == sources.SOURCES[name].sha256


@requires_published
@pytest.mark.parametrize("name", sorted(STUDY))
def test_published_loader_returns_the_file_in_raw_units(published_dir, name):
    X, y = _read_by_hand(published_dir / STUDY[name])
    data = rd.load(name, seed=0)
    assert data.name == name and data.feature_names == ("x1", "x2")
    assert data.standardize is False
    np.testing.assert_array_equal(data.X, X.astype(np.float32))  # every row, in file order
    np.testing.assert_array_equal(data.y, y)
    assert data.class_counts() == (500, 500)
    train, test = data.split(0.2, seed=0)
    assert train.standardizer is None  # not z-scored
    assert {tuple(r) for r in np.r_[train.X, test.X].tolist()} == {tuple(r) for r in X.astype(np.float32).tolist()}
    # The sweep's setup.n_samples (1,000) asks for every row; fewer is a seeded subsample.
    np.testing.assert_array_equal(rd.load(name, seed=5, n_samples=1000).X, data.X)
    small = rd.load(name, seed=1, n_samples=100)
    assert small.class_counts() == (50, 50)
    assert {tuple(r) for r in small.X.tolist()} <= {tuple(r) for r in data.X.tolist()}


@requires_published
def test_published_circles_target_is_the_outer_ring_as_generated(published_dir):
    X, y = _read_by_hand(published_dir / "circles.csv")
    radius = np.linalg.norm(X, axis=1)
    assert radius[y == 1].mean() > 0.9 and radius[y == 0].mean() < 0.3
    generated = rd.load("circles", seed=0)
    generated_radius = np.linalg.norm(generated.X.astype(np.float64), axis=1)
    for label in (0, 1):
        assert abs(generated_radius[generated.y == label].mean() - radius[y == label].mean()) < 0.05


@requires_published
def test_published_moons_match_the_generated_form(published_dir):
    X, y = _read_by_hand(published_dir / "moons.csv")
    generated = rd.load("moons", seed=0)
    G = generated.X.astype(np.float64)
    for label in (0, 1):
        # Heights of the moons (the scikit-learn form puts the lower one 0.2 higher).
        assert abs(G[generated.y == label, 1].mean() - X[y == label, 1].mean()) < 0.05
        assert abs(G[generated.y == label, 1].std() - X[y == label, 1].std()) < 0.05
    assert abs(G[generated.y == 1, 0].mean() - X[y == 1, 0].mean()) < 0.12


@requires_published
@pytest.mark.parametrize(("name", "std"), [("study_overlapping", 0.5), ("study_linearly_separable", 0.1)])
def test_published_blobs_have_the_study_spread(published_dir, name, std):
    X, y = _read_by_hand(published_dir / STUDY[name])
    for label in (0, 1):
        points = X[y == label]
        np.testing.assert_allclose(points.std(axis=0, ddof=1), std, rtol=0.1)
        assert np.all(np.abs(points.mean(axis=0)) <= 2.0 + 4 * std / np.sqrt(500))


def test_missing_file_names_the_fetch_command(tmp_path):
    with rd.data_dir(tmp_path):
        with pytest.raises(ValueError, match=r"not in the data directory .*`recourse-ray datasets fetch study_moons`"):
            rd.load("study_moons", seed=0)


def test_unknown_option_is_refused_with_a_suggestion(tmp_path):
    with pytest.raises(TypeError, match=r"Unknown option\(s\) 'standardise' for dataset 'study_moons'\. Did you mean 'standardize'"):
        rd.load("study_moons", seed=0, standardise=True)
    with pytest.raises(KeyError, match="Did you mean 'study_moons'"):
        synthetic.published("study_moon", seed=0)


# ---------------------------------------------------------------------------------------
# Fetch from a local server


@requires_published
def test_fetch_study_installs_all_four_verified(tmp_path, server, capsys):
    served, requests = server
    for file_name in STUDY.values():
        shutil.copy(SHARED_SYNTHETIC / file_name, served / file_name)
    data_dir = tmp_path / "data"
    assert main(["datasets", "fetch", "study", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert out.count("checksum ok") == 4
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(STUDY.values())
    for file_name in STUDY.values():
        assert (data_dir / file_name).read_bytes() == (SHARED_SYNTHETIC / file_name).read_bytes()
    assert [u.rsplit("/", 1)[1] for u in requests] == list(STUDY.values())
    assert all("/data/" in u for u in requests)
    # Installed files are kept without any network access.
    assert main(["datasets", "fetch", "study_circles", "--data-dir", str(data_dir)]) == 0
    assert "nothing changed" in capsys.readouterr().out and len(requests) == 4
    with rd.data_dir(data_dir):
        assert rd.load("study_circles", seed=0).n_samples == 1000


@requires_published
def test_fetch_checksum_mismatch_is_refused_and_writes_nothing(tmp_path, server, capsys):
    served, _ = server
    content = (SHARED_SYNTHETIC / "moons.csv").read_bytes()
    tampered = content.replace(b",1\n", b",0\n", 1)
    assert tampered != content
    (served / "moons.csv").write_bytes(tampered)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    assert main(["datasets", "fetch", "study_moons", "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("recourse-ray: error:") == 1
    assert "does not match the reference copy" in err and "Nothing was written" in err
    assert hashlib.sha256(tampered).hexdigest() in err and CHECKSUMS["moons.csv"] in err
    assert list(data_dir.iterdir()) == []
    with pytest.raises(sources.ChecksumMismatch):
        sources.fetch("study_moons", data_dir=tmp_path / "absent")
    assert not (tmp_path / "absent").exists()


def test_fetch_from_a_server_without_the_file_fails_fast(tmp_path, server, capsys):
    data_dir = tmp_path / "data"
    assert main(["datasets", "fetch", "study_overlapping", "--data-dir", str(data_dir), "--timeout", "5"]) == 1
    err = capsys.readouterr().err
    assert "HTTPError" in err and "recourse-ray datasets import study_overlapping" in err
    assert not data_dir.exists()


# ---------------------------------------------------------------------------------------
# The CLI and the paper sweeps


def test_cli_list_shows_the_study_presets(capsys):
    assert main(["datasets"]) == 0
    listed = capsys.readouterr().out.split()
    assert set(STUDY) <= set(listed) and "circles" in listed


@requires_published
def test_cli_info(published_dir, tmp_path, capsys):
    assert main(["datasets", "info", "study_circles"]) == 0
    out = capsys.readouterr().out
    assert "study_circles: 1000 rows, 2 features, classes 0/1 = 500/500" in out
    assert f"file: {published_dir / 'circles.csv'} (present, checksum ok)" in out
    assert main(["datasets", "info", "study_circles", "--data-dir", str(tmp_path)]) == 2
    assert "recourse-ray datasets fetch study_circles" in capsys.readouterr().err


@requires_published
@pytest.mark.parametrize("sweep", PAPER_SWEEPS)
def test_paper_sweeps_validate_with_the_published_data(sweep, monkeypatch, capsys):
    monkeypatch.setenv("RECOURSE_RAY_DATA", str(SHARED_SYNTHETIC))
    with rd.data_dir(None):  # the environment variable decides, as for a user
        assert main(["validate", str(ROOT / "sweeps" / sweep)]) == 0
    out = capsys.readouterr().out
    assert ": valid." in out
    for dataset, preset in (("overlapping", "study_overlapping"), ("circles", "study_circles")):
        assert f"{dataset}:" in out and f"preset: {preset}" in out


@pytest.mark.parametrize("sweep", PAPER_SWEEPS)
def test_paper_sweeps_without_the_data_name_the_fetch_command(sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECOURSE_RAY_DATA", str(tmp_path))
    with rd.data_dir(None):
        assert main(["validate", str(ROOT / "sweeps" / sweep)]) == 2
    err = capsys.readouterr().err
    assert err.count("recourse-ray: error:") == 1
    for name in STUDY:
        assert f"`recourse-ray datasets fetch {name}`" in err
    assert "recourse-ray datasets fetch study`" in err and str(tmp_path) in err
