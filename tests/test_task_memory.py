"""A system task's peak RSS is its own, not the reused worker's lifetime peak (sweep/_tasks.py)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from recourse_ray.sweep._tasks import peak_rss_mb, start_peak_window


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the peak window is a Linux feature")
def test_peak_window_forgets_an_earlier_task():
    start_peak_window()
    base = peak_rss_mb()
    big = np.ones(300 * 2**20 // 8)  # an earlier task's 300 MiB, touched, then freed
    assert peak_rss_mb() > base + 250
    del big
    assert start_peak_window() == "task"
    after = peak_rss_mb()
    assert after < base + 50  # the new window starts near the process's resident size
    small = np.ones(40 * 2**20 // 8)
    assert after + 30 < peak_rss_mb() < after + 100  # and sees this task's own allocation
    del small


def test_a_worker_imports_neither_polars_nor_pyarrow():
    """What a system task imports (the simulation, specs, the task bodies) leaves out the driver's storage stack."""
    import subprocess

    code = ("import sys; import recourse_ray, recourse_ray.simulation, recourse_ray.spec, recourse_ray.sweep._tasks; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'polars', 'pyarrow', 'matplotlib'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
