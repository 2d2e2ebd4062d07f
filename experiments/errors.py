"""Typed errors of the experiments domain, mapped to INVALID_ARGUMENT by the server."""

from __future__ import annotations


class SpecError(ValueError):
    """An experiment specification (or its inputs) is invalid; `field` names the culprit.

    The server maps it to ``INVALID_ARGUMENT`` with a ``BadRequest`` field violation:
    the message names the rule, never the value the caller sent.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ExperimentNotFound(LookupError):
    """No experiment with the given id; the server maps it to ``NOT_FOUND``.

    The message never holds the id (errors name fields and rules, never request values);
    `experiment_id` carries it for the status's ResourceInfo.
    """

    def __init__(self, experiment_id: str) -> None:
        super().__init__("no experiment with this id")
        self.experiment_id = experiment_id


class ExperimentExists(ValueError):
    """An experiment with this id already exists; mapped to ``ALREADY_EXISTS``."""


class ExperimentConflict(RuntimeError):
    """The experiment's state (or its slot's) refuses the change; ``FAILED_PRECONDITION``.

    `reason` is a stable UPPER_SNAKE code such as ``SLOT_OCCUPIED`` or ``REPORT_NOT_PASSING``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class MetricNotFound(LookupError):
    """No metric definition with that name (or version); mapped to ``NOT_FOUND`` (the name is not echoed)."""
