"""The `tacit` command: serve, demo (and the operator tools as their issues land)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from tacit.server.config import ConfigError, load_settings
from tacit.server.logs import configure_logging

logger = logging.getLogger("tacit.server")


def _settings(args: argparse.Namespace, **overrides: object):  # type: ignore[no-untyped-def]
    storage = {"data_dir": str(args.data_dir)} if getattr(args, "data_dir", None) else {}
    merged: dict[str, object] = {"storage": storage} if storage else {}
    merged.update(overrides)
    return load_settings(args.config, **merged)  # type: ignore[arg-type]


def cmd_serve(args: argparse.Namespace) -> int:
    from tacit.server.app import RunningServer

    settings = _settings(args)
    configure_logging(settings.server.log_level)
    metrics_port = settings.server.metrics_port
    metrics_dir = None
    if metrics_port and settings.server.workers > 1:
        from tacit.server.metrics import prepare_multiprocess_dir

        # Before any worker is spawned: they inherit the directory and write their values there.
        metrics_dir = prepare_multiprocess_dir(settings.storage.data_dir)
    endpoint = None
    if metrics_port:
        from tacit.server.metrics import MetricsEndpoint

        endpoint = MetricsEndpoint(metrics_port, metrics_dir)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("shutdown requested", extra={"signal": signum})
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if settings.server.workers > 1:
        from tacit.server.workers import WorkerPool

        pool = WorkerPool(settings, metrics_dir)
        pool.start()
        target = pool.target
    else:
        running = RunningServer(settings)
        target = running.target
    print(f"tacit serving on {target} (data in {settings.storage.data_dir.resolve()})", flush=True)
    if endpoint is not None:
        print(f"metrics on http://127.0.0.1:{endpoint.port}/metrics", flush=True)
    if settings.auth.enabled:
        print(f"API tokens: {settings.tokens_path.resolve()}", flush=True)
    if settings.server.workers > 1:
        pool.wait(stopping)
        pool.stop()
    else:
        stopping.wait()
        running.stop()
    if endpoint is not None:
        endpoint.close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tacit.cli.demo import run_demo

    settings = _settings(args, server={"address": "127.0.0.1:0", "log_level": "WARNING"})
    configure_logging(settings.server.log_level)
    return run_demo(settings, decisions=args.decisions, seed=args.seed)


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """Adds a new active pseudonym key; the old one stays verify-only for the window."""
    from datetime import timedelta

    from tacit.privacy.pseudonym import KeyRing

    settings = _settings(args)
    path = settings.keys_path
    if not path.exists():
        print(f"tacit: no key file at {path}; start the server once to create it", file=sys.stderr)
        return 2
    ring = KeyRing.load_or_create(path).rotate(path, timedelta(days=args.verify_window_days))
    print(f"active key is now {ring.active_key_id}; restart every server process to use it")
    return 0


def cmd_keys_rotate_audit(args: argparse.Namespace) -> int:
    """Adds a new active audit key; every older one stays in the file to verify old records."""
    import base64

    from tacit.privacy.audit_keys import AuditKeys

    path = _settings(args).audit_keys_path
    if not path.exists():
        print(f"tacit: no audit key file at {path}; start the server once to create it", file=sys.stderr)
        return 2
    keys = AuditKeys.load(path).rotate(path)
    public = base64.b64encode(keys.public_key()).decode("ascii")
    print(f"active audit key is now {keys.active_key_id} (anchor public key {public}); "
          "restart every server process to use it")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tacit", description=__doc__)
    parser.add_argument("--config", type=Path, default=None, help="TOML config file")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--data-dir", type=Path, default=None)
    serve.set_defaults(func=cmd_serve)
    demo = sub.add_parser("demo", help="start a server and drive simulated users through it")
    demo.add_argument("--data-dir", type=Path, default=Path("tacit-data"))
    demo.add_argument("--decisions", type=int, default=20_000)
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(func=cmd_demo)
    keys = sub.add_parser("keys", help="pseudonym and audit key management")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    rotate = keys_sub.add_parser("rotate", help="new active key; the old one verifies for a window")
    rotate.add_argument("--data-dir", type=Path, default=None)
    rotate.add_argument("--verify-window-days", type=float, default=30.0)
    rotate.set_defaults(func=cmd_keys_rotate)
    rotate_audit = keys_sub.add_parser(
        "rotate-audit", help="new active audit chain key; older keys stay to verify old records"
    )
    rotate_audit.add_argument("--data-dir", type=Path, default=None)
    rotate_audit.set_defaults(func=cmd_keys_rotate_audit)
    from tacit.cli.audit import add_audit_parser

    add_audit_parser(sub)
    from tacit.cli.models import add_model_parsers

    add_model_parsers(sub)
    from tacit.cli.experiment import register as add_experiment_parser

    add_experiment_parser(sub)
    from tacit.cli.slot import register as add_slot_parser

    add_slot_parser(sub)
    from tacit.cli.auto_optimize import register as add_auto_optimize_parser

    add_auto_optimize_parser(sub)
    from tacit.cli.catalogue import register as add_catalogue_parser

    add_catalogue_parser(sub)
    from tacit.cli.metric import register as add_metric_parser

    add_metric_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from tacit.privacy.audit_keys import AuditKeyError

    try:
        return int(args.func(args))
    except (ConfigError, AuditKeyError) as error:  # e.g. a replica without the shared audit key file
        print(f"tacit: {error}", file=sys.stderr)
        return 2

