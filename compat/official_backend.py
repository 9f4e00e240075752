"""Serves the official package's in-memory test backend as a process, for the reverse direction.

Run it with the compatibility interpreter and ``-P`` (so this repository's ``durabletask``
folder cannot shadow the official package)::

    .venv-compat/bin/python -P compat/official_backend.py --port 4321

It prints ``listening on localhost:<port>`` once the server accepts calls and serves until its
standard input closes or it receives SIGTERM/SIGINT, then stops the server and exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

REPO_ROOT = Path(__file__).resolve().parents[1]


def _check_official() -> None:
    """Exits with a message when ``durabletask`` resolves to this repository's package."""
    import durabletask

    location = Path(durabletask.__file__).resolve()
    if location.parent == REPO_ROOT / "durabletask":
        sys.exit(f"'durabletask' resolves to this repository ({location}): run with the compat interpreter and -P")


def main(argv: list[str] | None = None) -> int:
    """Starts the backend on ``--port`` and serves until told to stop."""
    parser = argparse.ArgumentParser(description="the official durabletask in-memory test backend")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    _check_official()
    from durabletask.testing import create_test_backend

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def watch_stdin() -> None:
        sys.stdin.read()
        stop.set()

    backend = create_test_backend(port=args.port)
    print(f"listening on localhost:{args.port}", flush=True)
    threading.Thread(target=watch_stdin, daemon=True).start()
    stop.wait()
    backend.stop(grace=0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
