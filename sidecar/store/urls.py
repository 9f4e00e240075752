"""Store specs shown to people: a PostgreSQL URL without its password."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Query parameters of a libpq URL that hold a secret.
_SECRET_PARAMETERS = ("password", "sslpassword")


def redact(spec: str) -> str:
    """``spec`` with the password of a URL replaced by ``***`` (paths and ``memory`` unchanged).

    Both places a libpq URL may hold one are covered: ``user:password@`` and ``?password=``.
    """
    if "://" not in spec:
        return spec
    try:
        parts = urlsplit(spec)
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key.lower() in _SECRET_PARAMETERS for key, _ in pairs):
        query = urlencode([(k, "***" if k.lower() in _SECRET_PARAMETERS else v) for k, v in pairs], safe="*")
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{user}:***@{host}" + (f":{port}" if port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
