"""Generate (or check) the committed Python code for the protocol files in protos/.

Usage: python tools/gen_proto.py [--check]
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos"
OUT_DIR = ROOT / "durabletask" / "internal"
PROTOS = ("orchestrator_service", "work_batches")
NAMES = tuple(f"{proto}{suffix}" for proto in PROTOS for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"))


def generate() -> dict[str, str]:
    """Run protoc into a temporary folder and return the files it wrote, imports fixed."""
    include = str(Path(protoc.__file__).parent / "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        rc = protoc.main([
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(PROTO_DIR / f"{proto}.proto") for proto in PROTOS),
        ])
        if rc != 0:
            raise SystemExit(f"protoc failed with exit code {rc}")
        out: dict[str, str] = {}
        for name in NAMES:
            text = (Path(tmp) / name).read_text()
            # protoc emits a top-level import; the module lives inside the package.
            text = re.sub(
                rf"^import ({'|'.join(PROTOS)})_pb2 as",
                r"from durabletask.internal import \1_pb2 as",
                text,
                flags=re.M,
            )
            out[name] = text
        return out


def main(argv: list[str]) -> int:
    files = generate()
    if "--check" in argv:
        stale = [n for n, t in files.items() if not (OUT_DIR / n).exists() or (OUT_DIR / n).read_text() != t]
        if stale:
            print("stale generated code (run `make proto`): " + ", ".join(stale))
            return 1
        print("generated code is up to date")
        return 0
    for name, text in files.items():
        (OUT_DIR / name).write_text(text)
    print(f"wrote {len(files)} files to {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
