"""`tacit auto-optimize …`: a gRPC client of ModelService's auto-optimize with the experimenter's token.

    tacit auto-optimize run --slot home [--candidate "--cb_explore_adf --squarecb -q UA" ...] [--dry-run]
    tacit auto-optimize list [--slot home] [--page-size 20]

`run` evaluates the candidates (default: the server's auto_optimize.grid or the built-in grid) on the
slot's log and prints the run: every configuration's estimate and interval, the verdict, and the
challenger experiment it started where the slot allows it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToDict

from tacit.server.auth import Role, read_token
from tacit.v1 import model_pb2, model_pb2_grpc


def cmd_auto_optimize(args: argparse.Namespace) -> int:
    token_file = args.token_file or Path(args.data_dir) / "tokens.json"
    metadata = (("authorization", f"Bearer {read_token(Path(token_file), Role.EXPERIMENTER)}"),)
    channel = grpc.insecure_channel(args.target)
    stub = model_pb2_grpc.ModelServiceStub(channel)
    try:
        if args.auto_optimize_command == "run":
            request = model_pb2.AutoOptimizeRequest(
                slot=args.slot, candidates=args.candidate, dry_run=args.dry_run
            )
            message = stub.AutoOptimize(request, metadata=metadata)
        else:
            message = stub.ListAutoOptimizeRuns(
                model_pb2.AutoOptimizeListRunsRequest(slot=args.slot, page_size=args.page_size),
                metadata=metadata,
            )
    except grpc.RpcError as error:
        print(f"tacit: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    finally:
        channel.close()
    print(json.dumps(MessageToDict(message, preserving_proto_field_name=True), indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds `tacit auto-optimize …` to the top-level parser."""
    parser = sub.add_parser("auto-optimize", help="judge candidate VW configurations on a slot's log")
    parser.add_argument("--target", default="127.0.0.1:50051", help="server address")
    parser.add_argument("--data-dir", type=Path, default=Path("tacit-data"))
    parser.add_argument("--token-file", type=Path, default=None, help="default: <data-dir>/tokens.json")
    parser.set_defaults(func=cmd_auto_optimize)
    verbs = parser.add_subparsers(dest="auto_optimize_command", required=True)
    run = verbs.add_parser("run", help="evaluate now; propose (and start a challenger where allowed)")
    run.add_argument("--slot", required=True)
    run.add_argument(
        "--candidate", action="append", default=[], help="VW arguments to try (repeat); default: the grid"
    )
    run.add_argument("--dry-run", action="store_true", help="never start an experiment")
    listing = verbs.add_parser("list", help="stored runs, newest first")
    listing.add_argument("--slot", default="")
    listing.add_argument("--page-size", type=int, default=20)
