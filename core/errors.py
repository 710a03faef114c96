"""Exceptions as one line: what goes into a job's error detail, a log line or a wrapped error message."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of the exception's message, or its class name when the message is empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
