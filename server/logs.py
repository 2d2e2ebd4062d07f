"""Structured JSON logs. Log events and our own identifiers, never request values."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter


def configure_logging(level: str = "INFO", stream: TextIO = sys.stderr) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("tacit")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
