"""Runs Microsoft's official Python SDK against our sidecar: the ``make compat`` job.

Steps:

1. Check the committed snapshot of the official protobuf descriptor
   (``tests/unit/data/official_descriptor.json``) against the installed official
   package (``--update-snapshot`` rewrites it instead).
2. Start our sidecar with this interpreter (the main environment) as a subprocess,
   on a SQLite file in a temporary directory and a port the OS picks.
3. Run ``compat/scenarios`` with the compatibility environment's interpreter, where
   ``durabletask`` is the official package, pointed at that sidecar.

Usage: ``python compat/run.py --compat-python .venv-compat/bin/python [pytest args...]``
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
COMPAT = ROOT / "compat"
SNAPSHOT = ROOT / "tests" / "unit" / "data" / "official_descriptor.json"
ADDRESS_VARIABLE = "DURABLETASK_COMPAT_ADDRESS"
LISTENING = re.compile(r"listening on (\S+)")
START_TIMEOUT = 60.0


def _isolated_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for child interpreters: no PYTHONPATH, no cwd on sys.path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONSAFEPATH"] = "1"
    env.update(extra or {})
    return env


def check_snapshot(compat_python: str, update: bool) -> bool:
    """Re-dumps the official descriptor facts and compares them with the committed snapshot."""
    proc = subprocess.run(
        [compat_python, str(COMPAT / "dump_official_descriptor.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=_isolated_env(),
        cwd=tempfile.gettempdir(),
    )
    if proc.returncode != 0:
        print(f"compat: dumping the official descriptor failed:\n{proc.stderr}", file=sys.stderr)
        return False
    current = json.loads(proc.stdout)
    if update:
        SNAPSHOT.write_text(proc.stdout)
        print(f"compat: snapshot rewritten from {current['source']}")
        return True
    committed = json.loads(SNAPSHOT.read_text())
    if committed != current:
        print(
            f"compat: {SNAPSHOT.relative_to(ROOT)} is stale ({committed.get('source')} committed, "
            f"{current.get('source')} installed): rerun with --update-snapshot",
            file=sys.stderr,
        )
        return False
    print(f"compat: descriptor snapshot matches {current['source']}")
    return True


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


class Sidecar:
    """Our sidecar as a subprocess on a SQLite file in ``workdir``."""

    def __init__(self, workdir: Path, python: str) -> None:
        self.log_path = workdir / "sidecar.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [python, "-m", "sidecar", "--store", str(workdir / "compat.db"), "--port", "0", "--log-level", "WARNING"],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=ROOT,
            env=_isolated_env(),
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=_pump, args=(self.proc.stdout, self._lines), daemon=True).start()

    def wait_address(self, timeout: float) -> str:
        """Returns the ``host:port`` the sidecar announces; raises if it exits or stays silent."""
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise RuntimeError(f"sidecar did not report its address within {timeout}s") from None
            if line is None:
                raise RuntimeError(f"sidecar exited early (code {self.proc.wait()}): {self.log_tail()}")
            print(f"sidecar: {line.rstrip()}")
            match = LISTENING.search(line)
            if match:
                return match.group(1)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the sidecar's log."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()[-chars:]

    def stop(self) -> int:
        """Stops the sidecar gracefully (SIGTERM), killing it if it hangs; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def run_scenarios(compat_python: str, address: str, pytest_args: list[str]) -> int:
    """Runs the scenarios with the official SDK; returns pytest's exit code."""
    scenarios = COMPAT / "scenarios"
    command = [
        compat_python,
        "-m",
        "pytest",
        "-c",
        str(scenarios / "pytest.ini"),
        "--rootdir",
        str(scenarios),
        *pytest_args,
    ]
    return subprocess.call(command, env=_isolated_env({ADDRESS_VARIABLE: address}), cwd=scenarios)


def main(argv: list[str] | None = None) -> int:
    """Entry point; unknown arguments go to pytest."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--compat-python", default=str(ROOT / ".venv-compat" / "bin" / "python"))
    parser.add_argument("--sidecar-python", default=sys.executable)
    parser.add_argument("--update-snapshot", action="store_true", help="rewrite the descriptor snapshot")
    parser.add_argument("--skip-snapshot", action="store_true", help="do not check the descriptor snapshot")
    args, pytest_args = parser.parse_known_args(argv)
    # abspath, not resolve(): following the venv's symlink would leave the venv.
    args.compat_python = os.path.abspath(args.compat_python)
    if not Path(args.compat_python).exists():
        print(f"compat: {args.compat_python} not found (run `make compat`)", file=sys.stderr)
        return 2
    if not args.skip_snapshot and not check_snapshot(args.compat_python, args.update_snapshot):
        return 1
    with tempfile.TemporaryDirectory(prefix="dt-compat-") as tmp:
        sidecar = Sidecar(Path(tmp), args.sidecar_python)
        try:
            address = sidecar.wait_address(START_TIMEOUT)
            code = run_scenarios(args.compat_python, address, pytest_args)
        finally:
            stopped = sidecar.stop()
            if stopped not in (0, -15):
                print(f"compat: sidecar exited with code {stopped}:\n{sidecar.log_tail()}", file=sys.stderr)
        if code != 0:
            print(f"compat: sidecar log tail:\n{sidecar.log_tail()}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
