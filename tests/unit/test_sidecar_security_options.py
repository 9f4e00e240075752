"""The pure parts of the sidecar's security and log hygiene: the exposure warning and bounded log text."""

from __future__ import annotations

import pytest

from sidecar.quoting import LOG_TEXT_LIMIT, log_text
from sidecar.security import AccessToken, ServerTls, describe_protection, exposure_warning, is_loopback

TLS = ServerTls(b"cert", b"key")
TOKEN = AccessToken("t")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_loopback_hosts_never_warn(host: str) -> None:
    assert is_loopback(host)
    assert exposure_warning(host, None, None) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "sidecar.example"])
def test_exposed_hosts_warn_about_what_is_missing(host: str) -> None:
    assert not is_loopback(host)
    both = exposure_warning(host, None, None)
    assert both is not None and "no token" in both and "no TLS" in both
    no_tls = exposure_warning(host, None, TOKEN)
    assert no_tls is not None and "no TLS" in no_tls and "no token" not in no_tls
    no_token = exposure_warning(host, TLS, None)
    assert no_token is not None and "no token" in no_token and "no TLS" not in no_token
    assert exposure_warning(host, TLS, TOKEN) is None


def test_describe_protection() -> None:
    assert describe_protection(None, None) == "security: plaintext; no token"
    assert describe_protection(ServerTls(b"c", b"k", b"ca"), TOKEN).startswith("security: mutual TLS")


def test_log_text_escapes_control_characters_and_bounds_length() -> None:
    assert log_text("a\nb\r\x00") == "a\\x0ab\\x0d\\x00"
    long = log_text("y" * 10_000)
    assert len(long) < LOG_TEXT_LIMIT + 40 and long.endswith("... (10,000 characters)")
    assert log_text(ValueError("bad\nthing")) == "bad\\x0athing"
