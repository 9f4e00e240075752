"""Runs ``scenarios.js`` (Microsoft's JavaScript SDK, client and worker) against our sidecar: ``make compat``.

The sidecar is a subprocess on a SQLite file in a temporary directory; Node runs the scenarios with
the SDK that ``npm ci`` installed into ``compat/js/node_modules`` (pinned by ``package.json`` and
``package-lock.json``). Prints each scenario's PASS/FAIL line; on failure also the SDK's log and the
sidecar's.

Usage: ``python compat/js/run_js_scenarios.py`` (the main environment's interpreter)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from compat_sidecar import OurSidecar, isolated_env  # noqa: E402

SDK = HERE / "node_modules" / "@microsoft" / "durabletask-js"
TIMEOUT = 180.0


def _text(captured: str | bytes | None) -> str:
    """Output captured by a timed-out run, as text."""
    return captured.decode(errors="replace") if isinstance(captured, bytes) else captured or ""


def run_js_scenarios(sidecar_python: str) -> int:
    """Runs the JavaScript scenarios once; returns 0 when all pass."""
    node = shutil.which("node")
    if node is None or not SDK.exists():
        missing = "node is not on PATH" if node is None else f"{SDK.relative_to(HERE.parents[1])} is missing"
        print(f"js: {missing} (make compat installs the SDK with npm ci)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="dt-js-compat-") as tmp:
        sidecar = OurSidecar(sidecar_python, Path(tmp) / "js.db", Path(tmp) / "sidecar.log")
        try:
            address = sidecar.wait_address(60)
            try:
                proc = subprocess.run(
                    [node, str(HERE / "scenarios.js"), address],
                    cwd=HERE,
                    env=isolated_env(),
                    capture_output=True,
                    text=True,
                    timeout=TIMEOUT,
                )
                code, out, err = proc.returncode, proc.stdout, proc.stderr
            except subprocess.TimeoutExpired as timeout:
                code, out = 124, _text(timeout.stdout)
                err = f"node ran past {TIMEOUT}s\n{_text(timeout.stderr)}"
        finally:
            sidecar.stop()
        print(out, end="")
        if code != 0:
            print(f"js: node exited with {code}; its log:\n{err[-6000:]}", file=sys.stderr)
            print(f"js: sidecar log tail:\n{sidecar.log_tail()}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(run_js_scenarios(sys.executable))
