"""Typed errors of the experiments domain, mapped to INVALID_ARGUMENT by the server."""

from __future__ import annotations


class SpecError(ValueError):
    """An experiment specification (or its inputs) is invalid; `field` names the culprit.

    The server maps it to ``INVALID_ARGUMENT`` with a ``BadRequest`` field violation,
    so the message must never contain subject data.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
