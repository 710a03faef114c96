"""Exceptions told in one line: what goes into a job's error detail, a log line or a wrapped error message.

Plain functions on BaseException and nothing else, so the engine (core.gan), the platform modules, the API
and the worker all use these two instead of each trimming tracebacks its own way.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of the exception's message, or its class name when the message is empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def described(exc: BaseException, limit: int = 300) -> str:
    """`ClassName: first line`, at most `limit` characters: for an error whose kind the reader needs too."""
    return f"{type(exc).__name__}: {first_line(exc)}"[:limit]
