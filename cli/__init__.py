"""The `tacit` command: serve, demo, audit, experiment, train, evaluate, drift, keys."""

from tacit.cli.main import main

__all__ = ["main"]
