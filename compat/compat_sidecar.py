"""Our sidecar as a subprocess, for ``compat/run.py`` and the scenarios that stop and restart it.

Standard library only: it is imported by the main environment's interpreter (``run.py``) and by
the compatibility environment's (the scenarios), where ``sidecar`` is not importable.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"listening on (\S+)")
SIDECAR_PYTHON_VARIABLE = "DURABLETASK_COMPAT_SIDECAR_PYTHON"


def isolated_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for child interpreters: no PYTHONPATH, no cwd on sys.path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONSAFEPATH"] = "1"
    env.update(extra or {})
    return env


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


class OurSidecar:
    """``python -m sidecar`` on the SQLite file ``db_path``; its log goes to ``log_path``."""

    def __init__(
        self,
        python: str,
        db_path: Path,
        log_path: Path,
        port: int = 0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("a")
        self.proc = subprocess.Popen(
            [python, "-m", "sidecar", "--store", str(db_path), "--port", str(port), "--log-level", "WARNING", *extra_args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=ROOT,
            env=isolated_env(),
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=_pump, args=(self.proc.stdout, self._lines), daemon=True).start()
        self.address = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_address(self, timeout: float) -> str:
        """Returns the ``host:port`` the sidecar announces; raises if it exits or stays silent."""
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise RuntimeError(f"sidecar did not report its address within {timeout}s") from None
            if line is None:
                raise RuntimeError(f"sidecar exited early (code {self.proc.wait()}): {self.log_tail()}")
            match = LISTENING.search(line)
            if match:
                self.address = match.group(1)
                return self.address

    @property
    def port(self) -> int:
        """The port from the announced address."""
        return int(self.address.rsplit(":", 1)[1])

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the sidecar's log."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 15) -> int:
        """Stops the sidecar gracefully (SIGTERM), killing it if it hangs; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would, and reap the process."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log.close()
