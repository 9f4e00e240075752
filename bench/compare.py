"""Side-by-side benchmark: Microsoft's official SDK on its in-memory backend, and ours on our sidecar.

    python -m bench.compare [--shapes chain,fanout] [--stores sqlite,postgresql] [--skip-official]
                            [--scale 0.1] [--client-threads 20] [--client-orchestrations 200]
                            [--timeout 900] [--compat-python .venv-compat/bin/python]

Backends, each a process of its own, started fresh for every run (one run = one shape at one
size on one backend, so no history accumulates from run to run):

``official``
    ``durabletask.testing.create_test_backend`` of the official package (``bench/official_backend.py``,
    which serves ``compat/official_backend.py`` with its history cap and server threads raised), under the compatibility
    interpreter with ``-P``; the workload runs the official worker and client.
``sqlite`` / ``postgresql``
    ``python -m sidecar`` on a SQLite file in a temporary directory, or on a fresh PostgreSQL database
    (``bench/stores.py``; left out when no server answers); the workload runs our worker and client.

Each run's workload is ``bench/shapes.py --sdk-side`` (worker and client in one process) under the
backend's SDK interpreter; it times first schedule to last completion itself. A run that took less
than ``--repeat-under`` seconds is timed ``--repeat`` times on each backend (the rounds alternate the
backends), and its row shows the median timing: short runs move by tens of percent from one timing to
the next. One table per shape: elapsed seconds, the rate, ours/official (our rate over the official
one: above 1, ours is faster), and how many timings with their lowest and highest rate.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bench.stores import postgres_admin_url, store_spec

ROOT = Path(__file__).resolve().parents[1]
SHAPES_SCRIPT = Path("bench") / "shapes.py"
OFFICIAL_SCRIPT = Path("bench") / "official_backend.py"
DEFAULT_COMPAT_PYTHON = Path(".venv-compat") / "bin" / "python"
SQLITE_SOURCE = ROOT / "sidecar" / "store" / "sqlite.py"
RESULT_PREFIX = "RESULT "
LISTENING = re.compile(r"listening on (\S+)")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
OFFICIAL_MAX_HISTORY = 100_000
STORE_KINDS = ("sqlite", "postgresql")
BACKEND_LABELS = {
    "official": "official, in-memory",
    "sqlite": "ours, SQLite file",
    "postgresql": "ours, PostgreSQL",
}


# ---------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Run:
    """One workload process: ``workload`` at ``size`` (see ``bench/shapes.py``)."""

    label: str
    workload: str
    size: int
    threads: int = 1
    activities: int = 1


@dataclass(frozen=True)
class Shape:
    """A named workload shape: one or more runs, reported in ``unit`` per second."""

    name: str
    title: str
    unit: str  # "activities" or "orchestrations"
    runs: tuple[Run, ...]


def scaled(size: int, scale: float) -> int:
    """``size`` times ``scale``, at least 1."""
    return max(1, round(size * scale))


def build_shapes(scale: float, client_threads: int, client_orchestrations: int) -> dict[str, Shape]:
    """Every shape, by name, with sizes multiplied by ``scale``."""
    chain, fanout, many = scaled(300, scale), scaled(2000, scale), scaled(500, scale)
    short, long = scaled(100, scale), scaled(1000, scale)
    large = scaled(10_000, scale)
    threads, per_thread = max(1, client_threads), scaled(client_orchestrations, scale)
    shapes = [
        Shape("chain", f"one orchestration, a chain of {chain} sequential activities", "activities",
              (Run(f"chain {chain}", "chain", chain),)),
        Shape("fanout", f"one orchestration, a fan-out of {fanout} activities (when_all)", "activities",
              (Run(f"fan-out {fanout}", "fanout", fanout),)),
        Shape("orchestrations", f"{many} orchestrations of one activity each (all scheduled, then awaited)",
              "orchestrations", (Run(f"{many} x 1", "orchestrations", many),)),
        Shape("chain-scaling", f"chains of {short} and of {long} sequential activities, one orchestration each",
              "activities", (Run(f"chain {short}", "chain", short), Run(f"chain {long}", "chain", long))),
        Shape("fanout-large", f"one orchestration, a fan-out of {large} activities (when_all)", "activities",
              (Run(f"fan-out {large}", "fanout", large),)),
        Shape("clients", f"{threads} client threads x {per_thread} orchestrations x 3 sequential activities "
              "(each thread: schedule one, wait for it, repeat)", "orchestrations",
              (Run(f"{threads}x{per_thread}x3", "clients", per_thread, threads=threads, activities=3),)),
    ]
    return {shape.name: shape for shape in shapes}


# ---------------------------------------------------------------- processes


def isolated_env() -> dict[str, str]:
    """The environment for child interpreters: no PYTHONPATH, no cwd or script folder on sys.path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONSAFEPATH"] = "1"
    return env


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file, indented."""
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()[-lines:]
    except OSError:
        return "    (no log)"
    return "\n".join("    " + line for line in text) or "    (empty log)"


def stop_process(proc: subprocess.Popen[str], graceful: bool = True) -> None:
    """Stops a process this driver started, by its pid: SIGTERM (unless not ``graceful``), then SIGKILL."""
    if proc.poll() is None:
        if graceful:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT)
                return
            except subprocess.TimeoutExpired:
                pass
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


class BackendError(RuntimeError):
    """A backend that did not start, or died."""


@contextmanager
def backend_process(command: list[str], log_path: Path, what: str) -> Iterator[str]:
    """Starts a backend that announces ``listening on host:port``; yields that address, stops it after."""
    with started_backend(command, log_path, what) as (address, _):
        yield address


@contextmanager
def started_backend(command: list[str], log_path: Path, what: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """:func:`backend_process`, yielding the address and the process."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                text=True, cwd=ROOT, env=isolated_env())
        try:
            assert proc.stdout is not None
            lines: queue.Queue[str | None] = queue.Queue()
            threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
            address = ""
            while not address:
                try:
                    line = lines.get(timeout=START_TIMEOUT)
                except queue.Empty:
                    raise BackendError(f"{what} did not report its address within {START_TIMEOUT:g}s:\n"
                                       f"{tail(log_path)}") from None
                if line is None:
                    raise BackendError(f"{what} exited early (code {proc.wait()}):\n{tail(log_path)}")
                match = LISTENING.search(line)
                address = match.group(1) if match else ""
            yield address, proc
            if proc.poll() is not None:
                raise BackendError(f"{what} died during the run (code {proc.returncode}):\n{tail(log_path)}")
        finally:
            stop_process(proc)


@contextmanager
def serve(backend: str, workdir: Path, compat_python: str, server_threads: int) -> Iterator[str]:
    """A fresh ``backend`` (``official``, ``sqlite`` or ``postgresql``); yields its address."""
    log_path = workdir / f"{backend}-backend.log"
    if backend == "official":
        command = [compat_python, "-P", str(OFFICIAL_SCRIPT), "--port", str(free_port()),
                   "--max-history-size", str(OFFICIAL_MAX_HISTORY), "--server-threads", str(server_threads)]
        with backend_process(command, log_path, "the official backend") as address:
            yield address
        return
    with store_spec(backend) as spec:
        command = [sys.executable, "-m", "sidecar", "--store", spec, "--port", "0", "--log-level", "WARNING"]
        with backend_process(command, log_path, f"our sidecar ({backend})") as address:
            yield address


@dataclass
class Outcome:
    """A run's result: elapsed seconds and counts, or an error."""

    elapsed: float = 0.0
    orchestrations: int = 0
    activities: int = 0
    error: str = ""

    def rate(self, unit: str) -> float:
        """``unit`` (activities or orchestrations) per second."""
        count = self.activities if unit == "activities" else self.orchestrations
        return count / self.elapsed if self.elapsed > 0 else 0.0


def run_workload(python: str, address: str, run: Run, timeout: float, log_path: Path, expect_sdk: str) -> Outcome:
    """Runs one ``bench/shapes.py --sdk-side`` process against ``address``; never waits past ``timeout`` + 60 s."""
    command = [python, "-P", str(SHAPES_SCRIPT), "--sdk-side", "--address", address, "--workload", run.workload,
               "--size", str(run.size), "--threads", str(run.threads), "--activities", str(run.activities),
               "--timeout", str(timeout)]
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT, env=isolated_env())
        try:
            stdout, _ = proc.communicate(timeout=timeout + 60)
        except subprocess.TimeoutExpired:
            return Outcome(error=f"the workload process did not finish within {timeout + 60:g}s (killed)")
        finally:
            stop_process(proc, graceful=False)
    results = [line[len(RESULT_PREFIX):] for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if not results:
        return Outcome(error=f"the workload process exited {proc.returncode} without a result:\n{tail(log_path)}")
    result = json.loads(results[-1])
    if not str(result.get("sdk", "")).startswith(expect_sdk):
        return Outcome(error=f"the workload ran SDK {result.get('sdk')!r}, expected {expect_sdk!r}")
    if "error" in result:
        return Outcome(error=f"{result['error']}\n{tail(log_path)}")
    return Outcome(float(result["elapsed"]), int(result["orchestrations"]), int(result["activities"]))


# ---------------------------------------------------------------- report


def sqlite_settings() -> str:
    """The journal mode and synchronous setting our SQLite store sets, as its source says."""
    try:
        source = SQLITE_SOURCE.read_text()
    except OSError:
        return "settings unknown"
    found = [f"{name}={match.group(1)}" for name in ("journal_mode", "synchronous")
             if (match := re.search(rf"PRAGMA {name}\s*=\s*(\w+)", source, re.IGNORECASE))]
    return ", ".join(found) or "settings unknown"


def official_version(compat_python: str) -> str:
    """The official package's version in the compatibility environment."""
    proc = subprocess.run([compat_python, "-P", "-c", "from importlib.metadata import version; "
                           "print(version('durabletask'))"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=isolated_env())
    if proc.returncode != 0:
        raise SystemExit(f"the compatibility interpreter has no official durabletask:\n{proc.stderr}")
    return proc.stdout.strip()


def median_outcome(timings: list[Outcome]) -> Outcome:
    """The timing with the median elapsed time (the lower middle one of an even count); any error wins."""
    failed = [outcome for outcome in timings if outcome.error]
    if failed or not timings:
        return failed[0] if failed else Outcome(error="not run")
    ordered = sorted(timings, key=lambda outcome: outcome.elapsed)
    return ordered[(len(ordered) - 1) // 2]


def spread(timings: list[Outcome], unit: str) -> str:
    """How many timings a row's median is taken from, and their lowest and highest rate."""
    if len(timings) < 2:
        return "1"
    rates = sorted(outcome.rate(unit) for outcome in timings)
    return f"{len(timings)} ({rates[0]:.0f}-{rates[-1]:.0f})"


def print_shape(shape: Shape, backends: list[str], timings: dict[tuple[str, str], list[Outcome]]) -> None:
    """One table: a row per run and backend, with the median rate and ours/official."""
    rate_header = f"{shape.unit}/s"
    width = max(len(BACKEND_LABELS[b]) for b in backends)
    run_width = max(len(r.label) for r in shape.runs)
    outcomes = {key: median_outcome(values) for key, values in timings.items()}
    print(f"\n{shape.name}: {shape.title}")
    print(f"  {'run':{run_width}s}  {'backend':{width}s}  {'elapsed':>9s}  {rate_header:>16s}  {'ours/official':>13s}"
          "  timings (rates)")
    for run in shape.runs:
        official = outcomes.get((run.label, "official"))
        for backend in backends:
            outcome = outcomes[(run.label, backend)]
            prefix = f"  {run.label:{run_width}s}  {BACKEND_LABELS[backend]:{width}s}"
            if outcome.error:
                print(f"{prefix}  FAILED: {outcome.error.splitlines()[0]}")
                continue
            ratio = "-"
            if backend != "official" and official is not None and not official.error:
                ratio = f"{outcome.rate(shape.unit) / official.rate(shape.unit):.2f}"
            print(f"{prefix}  {outcome.elapsed:7.2f} s  {outcome.rate(shape.unit):16.1f}  {ratio:>13s}"
                  f"  {spread(timings[(run.label, backend)], shape.unit)}")
    if shape.name == "chain-scaling" and len(shape.runs) == 2:
        short, long = shape.runs
        parts = []
        for backend in backends:
            a, b = outcomes[(short.label, backend)], outcomes[(long.label, backend)]
            value = "failed" if a.error or b.error else f"{a.rate(shape.unit) / b.rate(shape.unit):.2f}"
            parts.append(f"{BACKEND_LABELS[backend]} {value}")
        print(f"  per-step cost {long.label} / {short.label} (goal <= 1.5): " + ";  ".join(parts))


# ---------------------------------------------------------------- main


def time_once(backend: str, run: Run, args: argparse.Namespace, workdir: Path, compat_python: str) -> Outcome:
    """One timing of ``run`` on a fresh ``backend``."""
    python = compat_python if backend == "official" else sys.executable
    expect = "official" if backend == "official" else "ours"
    try:
        with serve(backend, workdir, compat_python, args.official_server_threads) as address:
            return run_workload(python, address, run, args.timeout, workdir / f"{backend}-workload.log", expect)
    except BackendError as exc:
        return Outcome(error=str(exc))
    except Exception as exc:  # a store that cannot be created, a process that cannot start
        return Outcome(error=f"{type(exc).__name__}: {exc}")


def parse_list(value: str, allowed: list[str] | tuple[str, ...], what: str) -> list[str]:
    """A comma-separated list, each item one of ``allowed``."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        raise SystemExit(f"--{what}: unknown {unknown or value!r}; choose from {', '.join(allowed)}")
    return items


def main(argv: list[str] | None = None) -> int:
    """Runs every selected shape on every selected backend and prints one table per shape."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="", help="comma-separated shapes (default: all)")
    parser.add_argument("--stores", default=",".join(STORE_KINDS),
                        help="our sidecar's stores, comma-separated (default: sqlite,postgresql; "
                             "PostgreSQL only when a server answers)")
    parser.add_argument("--skip-official", action="store_true", help="run only our stack")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every size (e.g. 0.1 for a smoke run)")
    parser.add_argument("--client-threads", type=int, default=20, help="client threads of the clients shape")
    parser.add_argument("--client-orchestrations", type=int, default=200,
                        help="orchestrations per client thread of the clients shape (before --scale)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one run may take")
    parser.add_argument("--repeat", type=int, default=3,
                        help="times each run is timed on each backend, each on a fresh backend; the table "
                             "shows the median (default: %(default)s)")
    parser.add_argument("--repeat-under", type=float, default=10.0,
                        help="only runs whose first timing took less than this many seconds are timed again "
                             "(default: %(default)s)")
    parser.add_argument("--official-server-threads", type=int, default=64,
                        help="gRPC server threads of the official backend (its own default, 10, deadlocks "
                             "once 10 clients wait for completions; default: %(default)s)")
    parser.add_argument("--compat-python", default=str(DEFAULT_COMPAT_PYTHON),
                        help="the interpreter with the official SDK (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.scale <= 0:
        raise SystemExit("--scale must be positive")
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")

    all_shapes = build_shapes(args.scale, args.client_threads, args.client_orchestrations)
    names = parse_list(args.shapes, list(all_shapes), "shapes") if args.shapes else list(all_shapes)
    stores = parse_list(args.stores, STORE_KINDS, "stores")
    if "postgresql" in stores and postgres_admin_url() is None:
        stores.remove("postgresql")
    backends = ([] if args.skip_official else ["official"]) + stores
    if not backends:
        raise SystemExit("nothing to run: no backend left")
    compat_python = args.compat_python
    version = "" if args.skip_official else official_version(compat_python)

    print("Side-by-side benchmark: Microsoft's official durabletask SDK and backend vs ours")
    if not args.skip_official:
        print(f"  official: durabletask {version} worker + client; its in-memory test backend "
              "(durabletask.testing.create_test_backend) with two limits raised:")
        print(f"            history cap 10,000 -> {OFFICIAL_MAX_HISTORY:,} events (a fan-out of 10,000 needs ~20,000),")
        print(f"            gRPC server threads 10 -> {args.official_server_threads} "
              "(each waiting client holds one; at 10 the worker's stream starves)")
    if stores:
        where = " / ".join({"sqlite": f"a SQLite file ({sqlite_settings()})",
                            "postgresql": "a fresh PostgreSQL database"}[kind] for kind in stores)
        print(f"  ours:     our worker + client; our sidecar as a subprocess (python -m sidecar) on {where}")
    print("  every run: a fresh backend process and store; one workload process with the worker and the client;")
    print("             elapsed = first schedule -> last completion, after one untimed warm-up orchestration")
    print("  ours/official: our rate / the official rate (above 1: ours is faster)")
    print(f"  each run timed {args.repeat} times per backend (those under {args.repeat_under:g} s; the rounds "
          "alternate the backends): the row is the median timing, then how many timings and their range of rates")
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"  machine: {os.cpu_count()} cores, load average {load} at the start; scale {args.scale:g}; "
          f"timeout {args.timeout:g}s per run")
    sys.stdout.flush()

    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        workdir = Path(tmp)
        for name in names:
            shape = all_shapes[name]
            timings: dict[tuple[str, str], list[Outcome]] = {}
            for run in shape.runs:
                # Rounds alternate the backends, so that a drift of the machine's speed hits each alike.
                for round_number in range(args.repeat):
                    for backend in backends:
                        done = timings.setdefault((run.label, backend), [])
                        if round_number > 0 and (done[0].error or done[0].elapsed >= args.repeat_under):
                            continue
                        outcome = time_once(backend, run, args, workdir, compat_python)
                        done.append(outcome)
                        if outcome.error:
                            failures.append(f"{name} / {run.label} / {BACKEND_LABELS[backend]}: {outcome.error}")
            print_shape(shape, backends, timings)
            sys.stdout.flush()
    print("\n(load average at the end: " + ", ".join(f"{value:.2f}" for value in os.getloadavg()) + ")")
    if failures:
        print("\nFAILED runs:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
