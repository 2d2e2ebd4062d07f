"""`tacit model export|import|reset|explain`: a gRPC client of ModelService.

    tacit model export --slot home bundle.zip [--version v000012]   bundle.zip + bundle.zip.sha256
    tacit model import --slot home bundle.zip [--sha256 HEX]        default: bundle.zip.sha256
    tacit model reset --slot home --yes                              a fresh, untrained model
    tacit model explain --slot home [--event-id ID] [--top 20] [--json]

Export, import and reset use the admin token (audited on the server); explain the experimenter's.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from tacit.server.auth import Role, read_token
from tacit.v1 import model_pb2, model_pb2_grpc


def _call(
    args: argparse.Namespace, role: Role, body: Callable[[model_pb2_grpc.ModelServiceStub, Any], int]
) -> int:
    token_file = args.token_file or Path(args.data_dir) / "tokens.json"
    metadata = (("authorization", f"Bearer {read_token(Path(token_file), role)}"),)
    channel = grpc.insecure_channel(args.target)
    try:
        return body(model_pb2_grpc.ModelServiceStub(channel), metadata)
    except grpc.RpcError as error:
        print(f"tacit: {error.code().name}: {error.details()}", file=sys.stderr)  # type: ignore[attr-defined]
        return 1
    finally:
        channel.close()


def _print_json(message: Any) -> None:
    print(json.dumps(MessageToDict(message, preserving_proto_field_name=True), indent=2))


def cmd_export(args: argparse.Namespace) -> int:
    def run(stub: model_pb2_grpc.ModelServiceStub, metadata: Any) -> int:
        reply = stub.ExportModel(
            model_pb2.ExportModelRequest(slot=args.slot, version=args.version), metadata=metadata
        )
        path = Path(args.file)
        path.write_bytes(reply.bundle)
        Path(f"{path}.sha256").write_text(f"{reply.sha256}  {path.name}\n")
        print(f"exported {reply.task} {reply.version} to {path} ({len(reply.bundle)} bytes)")
        print(f"sha256 {reply.sha256}")
        return 0

    return _call(args, Role.ADMIN, run)


def _expected_sha256(args: argparse.Namespace) -> str | None:
    if args.sha256:
        return str(args.sha256)
    sidecar = Path(f"{args.file}.sha256")
    return sidecar.read_text().split()[0] if sidecar.exists() and sidecar.read_text().split() else None


def cmd_import(args: argparse.Namespace) -> int:
    expected = _expected_sha256(args)
    if expected is None:
        print(
            "tacit: give --sha256 (the exporter printed it) or keep <file>.sha256 beside the bundle",
            file=sys.stderr,
        )
        return 2

    def run(stub: model_pb2_grpc.ModelServiceStub, metadata: Any) -> int:
        request = model_pb2.ImportModelRequest(
            slot=args.slot, bundle=Path(args.file).read_bytes(), sha256=expected
        )
        model = stub.ImportModel(request, metadata=metadata).model
        print(f"imported as {model.name} (from {model.source_version}, {model.examples} examples)")
        return 0

    return _call(args, Role.ADMIN, run)


def cmd_reset(args: argparse.Namespace) -> int:
    if not args.yes:
        print(
            "tacit: reset replaces the slot's model by an untrained one; add --yes to do it", file=sys.stderr
        )
        return 2

    def run(stub: model_pb2_grpc.ModelServiceStub, metadata: Any) -> int:
        reply = stub.ResetModel(model_pb2.ResetModelRequest(slot=args.slot), metadata=metadata)
        print(f"reset: {reply.model.name} replaces {reply.previous_version or 'nothing'}")
        return 0

    return _call(args, Role.ADMIN, run)


def _table(title: str, rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    for column in header:
        table.add_column(column, justify="left" if column == "name" else "right")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def cmd_explain(args: argparse.Namespace) -> int:
    def run(stub: model_pb2_grpc.ModelServiceStub, metadata: Any) -> int:
        if args.event_id:
            decision = stub.ExplainDecision(
                model_pb2.ExplainDecisionRequest(event_id=args.event_id, top_n=args.top), metadata=metadata
            )
            if args.json:
                _print_json(decision)
                return 0
            title = (
                f"{decision.slot}: candidate {decision.chosen_index} of {decision.candidates} "
                f"(p={decision.chosen_probability:.3f}, predicted reward {decision.predicted_reward:+.4f}, "
                f"model {decision.model_version})"
            )
            rows = [
                (c.name, f"{c.value:.4g}", f"{c.weight:+.4g}", f"{c.contribution:+.4f}")
                for c in decision.contributions
            ]
            _table(title, rows, ("name", "value", "weight", "contribution"))
            return 0
        explained = stub.ExplainModel(
            model_pb2.ExplainModelRequest(slot=args.slot, top_n=args.top, sample_size=args.sample),
            metadata=metadata,
        )
        if args.json:
            _print_json(explained)
            return 0
        for label, items in (
            ("namespaces", explained.namespaces),
            ("features", explained.features),
            ("interactions", explained.interactions),
            ("terms", explained.terms),
        ):
            sample = explained.sample_decisions
            title = f"{explained.slot} {explained.model_version}: {label}, {sample} decisions"
            rows = [(i.name, f"{i.importance:.4f}", f"{i.weight:+.4g}", str(i.occurrences)) for i in items]
            _table(title, rows, ("name", "importance", "weight", "rows"))
        return 0

    if not args.event_id and not args.slot:
        print("tacit: give --slot (the slot's model) or --event-id (one decision)", file=sys.stderr)
        return 2
    return _call(args, Role.EXPERIMENTER, run)


def add_lifecycle_commands(model_sub: Any) -> None:
    """Adds export, import, reset and explain under `tacit model`."""

    def client(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--target", default="127.0.0.1:50051", help="server address")
        parser.add_argument("--data-dir", type=Path, default=Path("tacit-data"))
        parser.add_argument("--token-file", type=Path, default=None, help="default: <data-dir>/tokens.json")
        return parser

    export = client(model_sub.add_parser("export", help="write a slot's model as a hashed bundle (admin)"))
    export.add_argument("--slot", required=True)
    export.add_argument("--version", default="", help="a registered version; default the newest")
    export.add_argument("file", type=Path)
    export.set_defaults(func=cmd_export)

    imported = client(
        model_sub.add_parser("import", help="install a bundle as the slot's next version (admin)")
    )
    imported.add_argument("--slot", required=True)
    imported.add_argument("--sha256", default=None, help="the bundle's SHA-256; default: <file>.sha256")
    imported.add_argument("file", type=Path)
    imported.set_defaults(func=cmd_import)

    reset = client(model_sub.add_parser("reset", help="replace the slot's model by an untrained one (admin)"))
    reset.add_argument("--slot", required=True)
    reset.add_argument("--yes", action="store_true", help="confirm")
    reset.set_defaults(func=cmd_reset)

    explain = client(
        model_sub.add_parser("explain", help="what a slot's model weighs, or one decision's reasons")
    )
    explain.add_argument("--slot", default="")
    explain.add_argument("--event-id", default="")
    explain.add_argument("--top", type=int, default=20)
    explain.add_argument(
        "--sample", type=int, default=0, help="newest decisions to average over (default 1,000)"
    )
    explain.add_argument("--json", action="store_true")
    explain.set_defaults(func=cmd_explain)
