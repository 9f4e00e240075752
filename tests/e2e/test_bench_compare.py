"""Smoke test of the side-by-side benchmark driver (``bench/compare.py``) on our stack only, tiny sizes."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.e2e.conftest import REPO_ROOT

pytestmark = pytest.mark.our_sidecar("runs the benchmark driver, which starts this repository's sidecar as a process")

ROW = re.compile(
    r"^\s+(\S.*?)\s+ours, SQLite file\s+(\d+\.\d+) s\s+(\d+\.\d+)\s+-\s+(\d+) \((\d+)-(\d+)\)\s*$", re.MULTILINE
)


@pytest.mark.timeout(60)
def test_compare_driver_runs_our_stack_and_prints_a_row_per_shape() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.compare", "--skip-official", "--scale", "0.01",
         "--shapes", "chain,fanout", "--stores", "sqlite", "--timeout", "30", "--repeat", "2"],
        capture_output=True,
        text=True,
        timeout=55,
        cwd=str(REPO_ROOT),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "synchronous=" in proc.stdout
    rows = {match.group(1): match.groups()[2:] for match in ROW.finditer(proc.stdout)}
    assert set(rows) == {"chain 3", "fan-out 20"}, proc.stdout
    for rate, timings, lowest, highest in rows.values():
        # Each short run timed twice; the row shows the shorter of the two, within their range of rates.
        assert timings == "2", proc.stdout
        assert int(lowest) - 1 <= float(rate) <= int(highest) + 1, proc.stdout
