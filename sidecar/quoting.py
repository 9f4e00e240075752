"""Client input quoted in error messages: bounded in length, control characters made visible.

Every message that repeats a value from a request goes through :func:`quoted`, so that a huge
value (a 1 MB completion token, say) cannot make the message itself too large to send: gRPC
carries the message in a header, and an oversize header fails the call with RESOURCE_EXHAUSTED
instead of the status that names the problem. :func:`bounded_message` is the last guard, for
whole messages built elsewhere (a store's or a library's error text).
"""

from __future__ import annotations

import logging

# How many characters of a value a message quotes.
QUOTE_LIMIT = 200
# The longest status message the sidecar sends (characters).
MESSAGE_LIMIT = 2000

_VISIBLE = {code: f"\\x{code:02x}" for code in (*range(32), 127)}


def quoted(value: str, limit: int = QUOTE_LIMIT) -> str:
    """``value`` in single quotes: at most ``limit`` characters of it (then '...' and its length), control characters escaped."""
    if len(value) <= limit:
        return f"'{value.translate(_VISIBLE)}'"
    return f"'{value[:limit].translate(_VISIBLE)}...' ({len(value):,} characters)"


def bounded_message(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """``message`` cut to ``limit`` characters (noting how long it was)."""
    if len(message) <= limit:
        return message
    return f"{message[:limit]}... (message cut; it was {len(message):,} characters long)"


# How many characters of one user-supplied value a log line repeats.
LOG_TEXT_LIMIT = 300


def log_text(value: object, limit: int = LOG_TEXT_LIMIT) -> str:
    """``str(value)`` made safe for one log line: control characters (newlines too) escaped, at most ``limit``
    characters kept (then '...' and the full length).

    Every log line of the sidecar that repeats client-supplied text (names, IDs, reasons, failure
    messages, worker IDs, errors quoting them) passes it through here, so that one request cannot
    write a huge line or forge extra lines.
    """
    text = str(value)
    if len(text) <= limit:
        return text.translate(_VISIBLE)
    return f"{text[:limit].translate(_VISIBLE)}... ({len(text):,} characters)"


# The longest line, and the most lines, a formatted log record (message and traceback) may have.
LOG_LINE_LIMIT = 1000
LOG_LINES_LIMIT = 200


class BoundedFormatter(logging.Formatter):
    """A formatter whose records stay bounded whatever an exception's text holds.

    Log calls bound the client text they repeat with :func:`log_text`; this is the last guard for
    what they cannot see: a traceback whose exception message quotes a request. Each line is cut
    to ``LOG_LINE_LIMIT`` characters and a record to ``LOG_LINES_LIMIT`` lines (its last lines
    kept, where a traceback names the error).
    """

    def format(self, record: logging.LogRecord) -> str:
        lines = super().format(record).split("\n")
        cut = [line if len(line) <= LOG_LINE_LIMIT else f"{line[:LOG_LINE_LIMIT]}... ({len(line):,} characters)"
               for line in lines]
        if len(cut) > LOG_LINES_LIMIT:
            kept = LOG_LINES_LIMIT // 2
            cut = [*cut[:kept], f"... ({len(cut) - 2 * kept:,} lines left out)", *cut[-kept:]]
        return "\n".join(cut)
