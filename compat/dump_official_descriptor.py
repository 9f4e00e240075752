"""Prints the wire facts of the installed official ``durabletask`` package's protobuf descriptor as JSON.

Run it with the compatibility environment's interpreter (the one holding the
official package, never ours)::

    .venv-compat/bin/python compat/dump_official_descriptor.py > tests/unit/data/official_descriptor.json
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from descriptor_facts import facts, file_proto  # noqa: E402


def main() -> int:
    """Dumps the facts, tagged with the official package's version."""
    from durabletask.internal import orchestrator_service_pb2 as official_pb

    out = {
        "source": f"durabletask=={metadata.version('durabletask')}",
        "proto_file": official_pb.DESCRIPTOR.name,
        "facts": facts(file_proto(official_pb.DESCRIPTOR)),
    }
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
