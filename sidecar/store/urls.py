"""Store specs shown to people: a PostgreSQL URL without its password."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact(spec: str) -> str:
    """``spec`` with the password of a URL replaced by ``***`` (paths and ``memory`` unchanged)."""
    if "://" not in spec:
        return spec
    try:
        parts = urlsplit(spec)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return spec
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}{port}", parts.path, parts.query, parts.fragment))
