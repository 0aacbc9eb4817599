"""Shared pytest setup.

Tabular data: when the shared CSVs exist at ``<repo>/../shared/data/tabular`` the whole
session reads them (``with recourse_ray.data.data_dir(...)``); tests that need them carry the
``tabular_data`` marker (or use the ``tabular_dir`` fixture) and are skipped cleanly when
the folder is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_TABULAR = REPO_ROOT.parent / "shared" / "data" / "tabular"
_SKIP_REASON = f"shared tabular CSVs not found at {SHARED_TABULAR}"

#: Marker for tests that read the shared CSVs: ``@requires_tabular_data``.
requires_tabular_data = pytest.mark.tabular_data


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "tabular_data: needs the shared CSVs in ../shared/data/tabular (skipped when absent)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SHARED_TABULAR.is_dir():
        return
    skip = pytest.mark.skip(reason=_SKIP_REASON)
    for item in items:
        if "tabular_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _shared_tabular_data_dir():
    """Point the data directory at the shared CSVs for the whole session (when present)."""
    import recourse_ray.data as rd

    if not SHARED_TABULAR.is_dir():
        yield
        return
    with rd.data_dir(SHARED_TABULAR):
        yield


@pytest.fixture
def tabular_dir():
    """The shared CSV folder, made the data directory for the test (again, in case a test changed it); skips when absent."""
    import recourse_ray.data as rd

    if not SHARED_TABULAR.is_dir():
        pytest.skip(_SKIP_REASON)
    with rd.data_dir(SHARED_TABULAR):
        yield SHARED_TABULAR


@pytest.fixture(scope="session")
def ray_session():
    """One embedded Ray instance (2 CPUs) for the whole test session.

    Token auth is disabled explicitly (Ray 2.60 enables it for local clusters).
    ``examples/`` and ``tests/faults`` (a term that raises, for the failure-handling
    tests) are shipped to the workers as Ray ``py_modules`` entries, as
    ``--py-modules`` does for users.
    """
    import os

    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        # User code reaches the workers the way it does on a cluster.
        runtime_env={"py_modules": [str(REPO_ROOT / "examples"), str(REPO_ROOT / "tests" / "faults")]},
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def _one_thread():
    """One torch thread for a module of tiny-tensor tests (``pytestmark = pytest.mark.usefixtures("_one_thread")``).

    Extra threads only add contention on the shared 2-core test machine.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
