"""The sidecar's HTTP port: the dashboard (``/``), its JSON API (``/api/...``) and the metrics (``/metrics``).

A standard-library ``ThreadingHTTPServer`` on a thread of its own. With an access token, every
page, API call and scrape needs it: as ``Authorization: Bearer <token>``, or (for a browser) in
the HttpOnly cookie that the login form sets. With a certificate it serves HTTPS.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import sys
import tempfile
import threading
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from sidecar.dashboard.api import ApiError, DashboardApi
from sidecar.dispatch import utcnow
from sidecar.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from sidecar.security import AccessToken, is_loopback
from sidecar.store.base import StoreError

log = logging.getLogger("durabletask-sidecar.dashboard")

COOKIE_NAME = "durabletask_token"
MAX_BODY_BYTES = 1024 * 1024
# Seconds a connection may stay silent (before its TLS handshake, within a request, or kept alive between
# requests) before it is closed: each open connection holds a thread.
IDLE_TIMEOUT = 60.0
_STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
_STATIC_FILES = frozenset({"index.html", "login.html", "app.js", "style.css"})
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # (no-referrer would make browsers send "Origin: null" with the dashboard's own forms)
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'",
}


def server_ssl_context(cert_file: str, key_file: str, client_ca_file: str | None = None) -> ssl.SSLContext:
    """A TLS server context with the sidecar's certificate; with a client CA, client certificates are required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    if client_ca_file:
        context.load_verify_locations(client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def ssl_context_from_pem(certificate_chain: bytes, private_key: bytes, client_ca: bytes | None = None) -> ssl.SSLContext:
    """:func:`server_ssl_context` from PEM bytes (the ``ssl`` module loads a key only from a file: a
    private temporary directory holds them for the moment it takes)."""
    with tempfile.TemporaryDirectory(prefix="durabletask-dashboard-tls-") as folder:
        cert_file = os.path.join(folder, "cert.pem")
        key_file = os.path.join(folder, "key.pem")
        for path, data in ((cert_file, certificate_chain), (key_file, private_key)):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as pem:
                pem.write(data)
        context = server_ssl_context(cert_file, key_file)
    if client_ca is not None:
        context.load_verify_locations(cadata=client_ca.decode("ascii", "replace"))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _static(name: str) -> bytes:
    return resources.files("sidecar.dashboard").joinpath(f"static/{name}").read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "durabletask-sidecar"

    # --- plumbing ----------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(IDLE_TIMEOUT)  # read here, so that a test can shorten it

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in {**_SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message, "status": status})

    def _redirect(self, location: str, cookie: str) -> None:
        self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": location, "Set-Cookie": cookie})

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        if token.accepts(self.headers.get("Authorization")):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(self.headers.get("Cookie", ""))
        except Exception:  # a malformed Cookie header carries no token
            return False
        morsel = cookie.get(COOKIE_NAME)
        return morsel is not None and token.accepts(f"Bearer {unquote(morsel.value)}")

    def _cookie(self, value: str, max_age: int | None = None) -> str:
        parts = [f"{COOKIE_NAME}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
        if self.server.secure:
            parts.append("Secure")
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        return "; ".join(parts)

    def _read_body(self) -> bytes | None:
        """The request body; None (after answering 411/413) when it has no length or is too long."""
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            self._error(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
            self.close_connection = True
            return None
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is larger than {MAX_BODY_BYTES} bytes")
            self.close_connection = True
            return None
        return self.rfile.read(length)

    def _host_refused(self) -> bool:
        """Whether the request was refused (403, connection closed) for its Host header.

        A dashboard on a loopback interface answers only requests addressed to a loopback name or
        address: a web page whose host name its owner re-points at 127.0.0.1 (DNS rebinding) is
        same-origin with its own requests, so the Origin check alone would let it read and act here.
        """
        if not self.server.loopback_only:
            return False
        host = self.headers.get("Host", "")
        try:
            name = urlsplit(f"//{host}").hostname or ""
        except ValueError:  # an unclosed '[', say
            name = ""
        if is_loopback(name):
            return False
        self.close_connection = True  # a POST body, if any, is not read
        self._error(HTTPStatus.FORBIDDEN, f"the Host header {host[:100]!r} does not name this loopback dashboard "
                    "(use localhost or a loopback address)")
        return True

    def _same_origin(self) -> bool:
        origin = self.headers.get("Origin")
        return origin is None or urlsplit(origin).netloc == self.headers.get("Host", "")

    # --- methods -----------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if self._host_refused():
            return
        url = urlsplit(self.path)
        path = url.path
        if path.startswith("/static/"):
            self._static_file(path.removeprefix("/static/"))
            return
        if not self._authorized():
            if path == "/metrics" or path.startswith("/api/"):
                self._send(HTTPStatus.UNAUTHORIZED, b'{"error": "this endpoint needs the access token", "status": 401}',
                           "application/json", {"WWW-Authenticate": 'Bearer realm="durabletask-sidecar"'})
            else:
                self._send(HTTPStatus.UNAUTHORIZED, _static("login.html"), _STATIC_TYPES[".html"])
            return
        if path == "/metrics":
            self._metrics()
        elif path.startswith("/api/"):
            query = dict(parse_qsl(url.query, keep_blank_values=True))
            self._api(lambda: self.server.api.get(path.removeprefix("/api/"), query))
        elif path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, _static("index.html"), _STATIC_TYPES[".html"])
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page: {path}")

    def do_POST(self) -> None:
        if self._host_refused():
            return
        path = urlsplit(self.path).path
        body = self._read_body()
        if body is None:
            return
        if not self._same_origin():
            self._error(HTTPStatus.FORBIDDEN, "cross-origin requests are refused")
            return
        if path == "/login":
            self._login(body)
            return
        if path == "/logout":
            self._redirect("/", self._cookie("", max_age=0))
            return
        if not self._authorized():
            self._send(HTTPStatus.UNAUTHORIZED, b'{"error": "this endpoint needs the access token", "status": 401}',
                       "application/json", {"WWW-Authenticate": 'Bearer realm="durabletask-sidecar"'})
            return
        if not path.startswith("/api/"):
            self._error(HTTPStatus.NOT_FOUND, f"no such action: POST {path}")
            return
        if self.headers.get_content_type() != "application/json":
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "the body must be JSON (Content-Type: application/json)")
            return
        try:
            payload = json.loads(body or b"{}")
        except ValueError as exc:
            self._error(HTTPStatus.BAD_REQUEST, f"the body is not valid JSON: {exc}")
            return
        except RecursionError:
            self._error(HTTPStatus.BAD_REQUEST, "the body is not valid JSON: it is nested too deeply")
            return
        if not isinstance(payload, dict):
            self._error(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
            return
        self._api(lambda: self.server.api.post(path.removeprefix("/api/"), payload))

    def do_PUT(self) -> None:
        self.close_connection = True  # its body, if any, is not read
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "use GET or POST")

    do_DELETE = do_PATCH = do_PUT

    # --- pages and endpoints -----------------------------------------------------------------

    def _static_file(self, name: str) -> None:
        if name not in _STATIC_FILES:
            self._error(HTTPStatus.NOT_FOUND, f"no such file: {name}")
            return
        self._send(HTTPStatus.OK, _static(name), _STATIC_TYPES["." + name.rpartition(".")[2]])

    def _login(self, body: bytes) -> None:
        form = dict(parse_qsl(body.decode("utf-8", "replace")))
        offered = form.get("token", "").strip()
        token = self.server.token
        if token is None or token.accepts(f"Bearer {offered}"):
            self._redirect("/", self._cookie(quote(offered, safe="")))
            return
        page = _static("login.html").replace(b"<!--error-->", b'<p class="error" id="login-error">Wrong token.</p>')
        self._send(HTTPStatus.UNAUTHORIZED, page, _STATIC_TYPES[".html"])

    def _metrics(self) -> None:
        dispatcher = self.server.api.dispatcher
        try:
            backlog = self.server.api.hub.store.backlog(utcnow())
        except StoreError as exc:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, f"store unavailable: {exc}\n".encode(), "text/plain")
            return
        text = dispatcher.metrics.render(dispatcher.open_streams(), backlog)
        self._send(HTTPStatus.OK, text.encode(), METRICS_CONTENT_TYPE)

    def _api(self, answer: Any) -> None:
        try:
            payload = answer()
        except ApiError as exc:
            self._error(exc.status, str(exc))
            return
        except StoreError as exc:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"the store failed: {exc}")
            return
        except Exception as exc:
            log.exception("dashboard API request %s failed", self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")
            return
        self._json(HTTPStatus.OK, payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: DashboardApi
    token: AccessToken | None
    secure: bool
    loopback_only: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End every open connection (kept-alive ones wait in their threads for another request)."""
        with self._connections_lock:
            open_connections = list(self._connections)
        for connection in open_connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # closed meanwhile

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A failed TLS handshake or a dropped connection: one line, not a traceback on stderr.
        log.info("dashboard connection from %s failed: %s", client_address[0], sys.exc_info()[1])


class DashboardServer:
    """Serves the dashboard, its API and the metrics of one sidecar on an HTTP(S) port of its own."""

    def __init__(
        self,
        servicer: Any,
        *,
        host: str = "127.0.0.1",
        token: AccessToken | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.api = DashboardApi(servicer)
        self.host = host
        self.token = token
        self.ssl_context = ssl_context
        self.port: int | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The dashboard's base URL (after start)."""
        scheme = "https" if self.ssl_context is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def start(self, port: int = 0) -> int:
        """Bind ``host:port`` (0 picks a free port) and serve on a thread. Returns the port."""
        server_class = type("_BoundServer", (_Server,), {"address_family": _family(self.host)})
        try:
            server = server_class((self.host, port), _Handler)
        except OSError as exc:
            raise OSError(f"cannot listen on {self.host}:{port} for the dashboard: {exc.strerror or exc}") from None
        server.api = self.api
        server.token = self.token
        server.secure = self.ssl_context is not None
        server.loopback_only = is_loopback(self.host)
        if self.ssl_context is not None:
            # The handshake happens on the request's thread, so that a stalled client holds no other.
            server.socket = self.ssl_context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, name="sidecar-dashboard", daemon=True)
        self._thread.start()
        log.info("dashboard and metrics on %s", self.url)
        return self.port

    def stop(self) -> None:
        """Stop serving and close the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()  # their threads then end; none answers after stop
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
