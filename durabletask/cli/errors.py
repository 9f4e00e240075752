"""Exit codes and the one-line errors of the command-line tool.

Every failure becomes a ``CliError`` carrying an exit code and a message; ``main`` prints it
as ``error: <message>`` on stderr, with no traceback.
"""

from __future__ import annotations

import grpc

OK = 0
FAILED = 1          # the operation was refused or failed (unknown instance, wrong state, ...)
USAGE = 2           # bad command line or bad input (unknown option, bad JSON, bad duration)
UNAVAILABLE = 3     # the sidecar cannot be reached
UNAUTHENTICATED = 4  # token missing or wrong, or permission denied
TIMEOUT = 5         # a wait ran out of time

_CODE_BY_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.UNAVAILABLE: UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED: UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: UNAUTHENTICATED,
    grpc.StatusCode.INVALID_ARGUMENT: USAGE,
    grpc.StatusCode.DEADLINE_EXCEEDED: TIMEOUT,
}


class CliError(Exception):
    """A failure to report on one line, with the exit code to end with."""

    def __init__(self, message: str, exit_code: int = FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class UsageError(CliError):
    """The command line or an input value is wrong (exit code 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, USAGE)


def one_line(text: str) -> str:
    """``text`` with line breaks folded into spaces (an error is printed on one line)."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def from_rpc_error(error: grpc.RpcError, address: str) -> CliError:
    """The CliError for a failed gRPC call to the sidecar at ``address``."""
    code = error.code() if callable(getattr(error, "code", None)) else None
    details = error.details() if callable(getattr(error, "details", None)) else None
    text = one_line(details or str(error))
    if code == grpc.StatusCode.UNAVAILABLE:
        return CliError(f"cannot reach the sidecar at {address}: {text}", UNAVAILABLE)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return CliError(f"the sidecar at {address} refused the request ({code.name.lower()}): {text}",
                        UNAUTHENTICATED)
    exit_code = _CODE_BY_STATUS.get(code, FAILED) if code is not None else FAILED
    return CliError(text, exit_code)
