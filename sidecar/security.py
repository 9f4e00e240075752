"""The sidecar's shared bearer token: loaded once, checked the same way by gRPC, dashboard and metrics."""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from pathlib import Path

# The environment variable that holds the token when no --token-file is given.
TOKEN_VARIABLE = "DURABLETASK_SIDECAR_TOKEN"
_SCHEME = "bearer "


class TokenError(ValueError):
    """The token file cannot be read or holds no token."""


class AccessToken:
    """A shared secret that every request must carry as ``authorization: Bearer <token>``."""

    def __init__(self, token: str) -> None:
        if not token or any(c.isspace() for c in token):
            raise TokenError("the token must be non-empty and contain no whitespace")
        self._token = token.encode()

    def accepts(self, authorization: str | None) -> bool:
        """Whether an ``authorization`` header value carries this token (compared in constant time)."""
        if authorization is None or not authorization[: len(_SCHEME)].lower() == _SCHEME:
            return False
        offered = authorization[len(_SCHEME) :].strip().encode()
        return hmac.compare_digest(offered, self._token)


def load_token(token_file: str | None, environ: Mapping[str, str] = os.environ) -> AccessToken | None:
    """The token from ``token_file`` (its first line), else from ``$DURABLETASK_SIDECAR_TOKEN``, else None."""
    if token_file:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise TokenError(f"cannot read token file '{token_file}': {exc.strerror or exc}") from exc
        lines = text.strip().splitlines()
        if not lines:
            raise TokenError(f"token file '{token_file}' is empty")
        return AccessToken(lines[0].strip())
    value = environ.get(TOKEN_VARIABLE, "").strip()
    return AccessToken(value) if value else None
