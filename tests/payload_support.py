"""Payload stores for the large-payload tests: one in memory, and Azurite (the Azure Storage emulator)."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from durabletask.payload import LargePayloadStorageOptions, PayloadStore

REPO_ROOT = Path(__file__).resolve().parents[1]
AZURITE_BLOB = REPO_ROOT / "tests" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# The well-known development account of the Azure Storage emulators (public, documented by Azure).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class MemoryPayloadStore(PayloadStore):
    """Keeps payloads in a dict; tokens read ``memory:<n>``. Counts uploads and downloads."""

    def __init__(self, threshold_bytes: int = 1024, max_stored_payload_bytes: int = 10 * 1024 * 1024) -> None:
        self._options = LargePayloadStorageOptions(
            threshold_bytes=threshold_bytes, max_stored_payload_bytes=max_stored_payload_bytes
        )
        self.blobs: dict[str, bytes] = {}
        self.uploaded_for: list[str | None] = []
        self.downloads = 0
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def options(self) -> LargePayloadStorageOptions:
        return self._options

    def upload(self, data: bytes, *, instance_id: str | None = None) -> str:
        with self._lock:
            token = f"memory:{next(self._numbers)}"
            self.blobs[token] = data
            self.uploaded_for.append(instance_id)
        return token

    async def upload_async(self, data: bytes, *, instance_id: str | None = None) -> str:
        return self.upload(data, instance_id=instance_id)

    def download(self, token: str) -> bytes:
        with self._lock:
            self.downloads += 1
            return self.blobs[token]

    async def download_async(self, token: str) -> bytes:
        return self.download(token)

    def is_known_token(self, value: str) -> bool:
        return value.startswith("memory:")


def azurite_connection_string(port: int) -> str:
    """The connection string of an Azurite blob service on ``port``."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def azurite_blob_service(timeout: float = 30.0) -> Iterator[str]:
    """Runs Azurite's blob service on a free port (in memory) and yields its connection string.

    Raises FileNotFoundError when Azurite is not installed (``make tests/azurite/node_modules/.installed``).
    """
    if not AZURITE_BLOB.exists() or shutil.which("node") is None:
        raise FileNotFoundError(f"Azurite is not installed under {AZURITE_BLOB.parent.parent.parent}")
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="azurite-")
    proc = subprocess.Popen(
        [str(AZURITE_BLOB), "--inMemoryPersistence", "--silent", "--skipApiVersionCheck",
         "--blobHost", "127.0.0.1", "--blobPort", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ}, cwd=workdir,
    )
    try:
        deadline = time.monotonic() + timeout
        while not _answers(port):
            if proc.poll() is not None:
                raise RuntimeError(f"Azurite exited: {proc.stderr.read().decode(errors='replace') if proc.stderr else ''}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"Azurite did not listen on port {port} within {timeout} s")
            try:  # between looks at the port, wait on the one thing that can happen: Azurite exiting
                proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
        yield azurite_connection_string(port)
    finally:
        proc.kill()  # in memory: nothing to flush, and it lingers for seconds after SIGTERM
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()
        shutil.rmtree(workdir, ignore_errors=True)
