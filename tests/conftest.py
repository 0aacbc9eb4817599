"""Shared pytest setup.

Tabular data: when the shared CSVs exist at ``<repo>/../shared/data/tabular`` the whole
session reads them (``recourse_ray.data.set_data_dir``); tests that need them carry the
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

    if SHARED_TABULAR.is_dir():
        rd.set_data_dir(SHARED_TABULAR)
    yield
    rd.set_data_dir(None)


@pytest.fixture
def tabular_dir() -> Path:
    """The shared CSV folder, made the data directory (again, in case a test changed it); skips when absent."""
    import recourse_ray.data as rd

    if not SHARED_TABULAR.is_dir():
        pytest.skip(_SKIP_REASON)
    rd.set_data_dir(SHARED_TABULAR)
    return SHARED_TABULAR


#: Generator variant name whose systems raise inside their Ray task (failure tests).
FAILING_GENERATOR = "boom"


@pytest.fixture(scope="session")
def ray_session():
    """One embedded Ray instance (2 CPUs) for the whole test session.

    Token auth is disabled explicitly (Ray 2.60 enables it for local clusters), and the
    workers get ``RECOURSE_RAY_TEST_FAIL`` so that systems of the ``boom`` generator
    variant raise: the failure-handling tests use it. ``examples/`` is shipped to the
    workers as a Ray ``py_modules`` entry, as ``--py-modules`` does for users.
    """
    import os

    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        runtime_env={
            "env_vars": {"RECOURSE_RAY_TEST_FAIL": FAILING_GENERATOR},
            # The examples package reaches the workers the way user code does on a cluster.
            "py_modules": [str(REPO_ROOT / "examples")],
        },
    )
    yield ray
    ray.shutdown()
