"""Runs Microsoft's official Python SDK against our sidecar, and ours against its backend: ``make compat``.

Steps (``--only`` picks some of them; by default all run, in this order):

``snapshot``
    Check the committed snapshot of the official protobuf descriptor
    (``tests/unit/data/official_descriptor.json``) against the installed official package
    (``--update-snapshot`` rewrites it instead).
``scenarios``
    Start our sidecar with this interpreter (the main environment) as a subprocess, on a SQLite
    file in a temporary directory and a port the OS picks, and run ``compat/scenarios`` with the
    compatibility environment's interpreter, where ``durabletask`` is the official package.
``mixed``
    ``tests/e2e/test_compat_mixed.py``: on one of our sidecars, the official client with our worker,
    and our client with the official worker; ``tests/e2e/test_compat_tracing.py``: a trace the
    official client starts continues in our worker; ``tests/e2e/test_compat_payloads.py``: large
    payloads in one Azure Blob container (Azurite), the official client with our worker and our
    client with the official worker, each reading the other's stored payloads.
``reverse``
    ``tests/e2e`` with ``DURABLETASK_E2E_BACKEND=official``: our SDK's end-to-end tests against the
    official package's in-memory test backend (tests it cannot serve are skipped with the reason),
    in three pytest processes, a test file each at a time, as ``make test`` runs them.
``migration``
    ``compat/migration``: instances started by the official worker finish on ours and the other way
    round, per feature, and must end as on a single SDK (one sidecar, three worker phases).
``api-surface``
    ``compat/api_surface``: every public name of the official package must exist in ours with
    compatible parameters, unless ``allowed_differences.py`` gives the reason it does not.
``js``
    ``compat/js``: Microsoft's JavaScript SDK (client and worker, installed by ``npm ci``) runs its
    scenarios against our sidecar.

Usage: ``python compat/run.py --compat-python .venv-compat/bin/python [--only scenarios,mixed] [pytest args...]``
(pytest arguments go to every pytest step).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compat_sidecar import SIDECAR_PYTHON_VARIABLE, OurSidecar, isolated_env

ROOT = Path(__file__).resolve().parents[1]
COMPAT = ROOT / "compat"
SNAPSHOT = ROOT / "tests" / "unit" / "data" / "official_descriptor.json"
ADDRESS_VARIABLE = "DURABLETASK_COMPAT_ADDRESS"
START_TIMEOUT = 60.0
STEPS = ("snapshot", "scenarios", "mixed", "reverse", "migration", "api-surface", "js")
# The reverse step's tests mostly wait on a backend: three processes finish them sooner.
REVERSE_PARALLEL = ["-n", "3", "--dist", "loadfile"]
MIXED_TESTS = [
    "tests/e2e/test_compat_mixed.py", "tests/e2e/test_compat_tracing.py", "tests/e2e/test_compat_payloads.py",
]


def check_snapshot(compat_python: str, update: bool) -> bool:
    """Re-dumps the official descriptor facts and compares them with the committed snapshot."""
    proc = subprocess.run(
        [compat_python, str(COMPAT / "dump_official_descriptor.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=isolated_env(),
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


def run_scenarios(compat_python: str, sidecar_python: str, pytest_args: list[str]) -> int:
    """Runs the scenarios with the official SDK against a fresh sidecar; returns pytest's exit code."""
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
    with tempfile.TemporaryDirectory(prefix="dt-compat-") as tmp:
        sidecar = OurSidecar(sidecar_python, Path(tmp) / "compat.db", Path(tmp) / "sidecar.log")
        try:
            address = sidecar.wait_address(START_TIMEOUT)
            print(f"compat: our sidecar listens on {address}")
            env = isolated_env({ADDRESS_VARIABLE: address, SIDECAR_PYTHON_VARIABLE: sidecar_python})
            code = subprocess.call(command, env=env, cwd=scenarios)
        finally:
            stopped = sidecar.stop()
            if stopped not in (0, -15):
                print(f"compat: sidecar exited with code {stopped}:\n{sidecar.log_tail()}", file=sys.stderr)
        if code != 0:
            print(f"compat: sidecar log tail:\n{sidecar.log_tail()}", file=sys.stderr)
    return code


def run_our_tests(compat_python: str, targets: list[str], extra_env: dict[str, str], pytest_args: list[str]) -> int:
    """Runs our own pytest ``targets`` with this interpreter; returns pytest's exit code."""
    env = dict(os.environ, DURABLETASK_COMPAT_PYTHON=compat_python, **extra_env)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *targets, *pytest_args]
    return subprocess.call(command, env=env, cwd=ROOT)


def run_migration_suite(compat_python: str, our_python: str) -> int:
    """The migration suite (``compat/migration/migration_driver.py``) in a subprocess of ``our_python``."""
    driver = COMPAT / "migration" / "migration_driver.py"
    return subprocess.call([our_python, str(driver), "--compat-python", compat_python], cwd=ROOT)


def main(argv: list[str] | None = None) -> int:
    """Entry point; unknown arguments go to pytest."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--compat-python", default=str(ROOT / ".venv-compat" / "bin" / "python"))
    parser.add_argument("--sidecar-python", default=sys.executable)
    parser.add_argument("--only", default=",".join(STEPS), help=f"comma-separated steps out of {', '.join(STEPS)}")
    parser.add_argument("--update-snapshot", action="store_true", help="rewrite the descriptor snapshot")
    parser.add_argument("--skip-snapshot", action="store_true", help="do not check the descriptor snapshot")
    args, pytest_args = parser.parse_known_args(argv)
    steps = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        parser.error(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    if args.skip_snapshot and "snapshot" in steps:
        steps.remove("snapshot")
    # abspath, not resolve(): following the venv's symlink would leave the venv.
    args.compat_python = os.path.abspath(args.compat_python)
    if not Path(args.compat_python).exists():
        print(f"compat: {args.compat_python} not found (run `make compat`)", file=sys.stderr)
        return 2
    results: dict[str, int] = {}
    for step in steps:
        began = time.monotonic()
        print(f"compat: --- {step} ---", flush=True)
        if step == "snapshot":
            code = 0 if check_snapshot(args.compat_python, args.update_snapshot) else 1
        elif step == "scenarios":
            code = run_scenarios(args.compat_python, args.sidecar_python, pytest_args)
        elif step == "mixed":
            code = run_our_tests(args.compat_python, MIXED_TESTS, {}, pytest_args)
        elif step == "migration":
            code = run_migration_suite(args.compat_python, args.sidecar_python)
        elif step == "js":
            code = subprocess.call([args.sidecar_python, str(COMPAT / "js" / "run_js_scenarios.py")], cwd=ROOT)
        elif step == "api-surface":
            code = subprocess.call(
                [sys.executable, str(COMPAT / "api_surface" / "compare_api_surface.py"), "--compat-python", args.compat_python],
                cwd=ROOT,
            )
        else:
            code = run_our_tests(args.compat_python, ["tests/e2e"], {"DURABLETASK_E2E_BACKEND": "official"},
                                 [*REVERSE_PARALLEL, *pytest_args])
        results[step] = code
        print(f"compat: {step}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {time.monotonic() - began:.1f}s")
    failed = [step for step, code in results.items() if code != 0]
    print(f"compat: {'all steps passed' if not failed else 'failed: ' + ', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
