"""Wire compatibility: Microsoft's official Python SDK (worker and client) runs entities on our sidecar.

The official package lives in the repository's ``.venv-compat`` (``make compat`` creates it); the
driver runs there as a subprocess with ``-P`` and from outside the repository, so that our own
``durabletask`` package cannot shadow the official one.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.e2e.conftest import REPO_ROOT, fast_sidecar

COMPAT_PYTHON = REPO_ROOT / ".venv-compat" / "bin" / "python"
DRIVER = REPO_ROOT / "tests" / "e2e" / "official_entity_driver.py"

pytestmark = [
    pytest.mark.our_sidecar("drives this repository's sidecar with the official SDK"),
    pytest.mark.skipif(not COMPAT_PYTHON.exists(), reason="needs .venv-compat with the official durabletask "
                       "package (make compat creates it)"),
]


def test_official_worker_and_client_run_entities(tmp_path) -> None:
    with fast_sidecar() as (_, address):
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        proc = subprocess.run(
            [str(COMPAT_PYTHON), "-P", str(DRIVER), address],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=str(tmp_path),
            env=env,
        )
    assert proc.returncode == 0, f"driver failed:\n{proc.stdout}\n{proc.stderr[-6000:]}"
    observed = json.loads(proc.stdout.strip().splitlines()[-1])

    read = observed["read_counter"]
    assert read["status"] == "COMPLETED"
    assert read["output"]["value"] == 10  # four client signals ran before the orchestration's call
    assert "counter refuses" in read["output"]["failure"]
    assert "nobody" in read["output"]["unregistered"]  # an unregistered entity fails the call, naming it
    assert observed["counter_state"] == 10 and observed["counter_without_state"] is False
    assert observed["missing_entity"] is None

    assert observed["transfers"] == [["COMPLETED", 100]] * 5
    assert observed["balances"] == {"@account@a": 50, "@account@b": 50}
    assert observed["locked_by"] == [None, None]
    assert observed["before_delayed_reset"] == 10  # the delayed signal did not run early
    assert observed["clean"] == [0, 0]
