"""The sidecar's web dashboard, its JSON API and the Prometheus metrics endpoint, on an HTTP port of their own."""

from sidecar.dashboard.http_server import DashboardServer, server_ssl_context, ssl_context_from_pem

__all__ = ["DashboardServer", "server_ssl_context", "ssl_context_from_pem"]
