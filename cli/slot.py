"""`tacit slot …`: a gRPC client of SlotService (apprentice mode) with the experimenter's token.

tacit slot status home                         mode, agreement with the baseline, OPE estimates
tacit slot set-mode home online --reason "..."  switch on command (audited)
tacit slot history home                        the slot's mode changes, newest first
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from tacit.server.auth import Role, read_token
from tacit.v1 import slot_pb2, slot_pb2_grpc

MODES = {"online": slot_pb2.SLOT_MODE_ONLINE, "apprentice": slot_pb2.SLOT_MODE_APPRENTICE}


def _request(args: argparse.Namespace) -> tuple[str, Message]:
    """The RPC and its request for the verb."""
    if args.slot_command == "status":
        return "GetSlotStatus", slot_pb2.GetSlotStatusRequest(slot=args.slot)
    if args.slot_command == "set-mode":
        return "SetSlotMode", slot_pb2.SetSlotModeRequest(
            slot=args.slot, mode=MODES[args.mode], reason=args.reason or ""
        )
    return "ListSlotModeChanges", slot_pb2.ListSlotModeChangesRequest(
        slot=args.slot, page_size=args.page_size, page_token=args.page_token or ""
    )


def cmd_slot(args: argparse.Namespace) -> int:
    token = read_token(Path(args.token_file or Path(args.data_dir) / "tokens.json"), Role.EXPERIMENTER)
    method, request = _request(args)
    with grpc.insecure_channel(args.target) as channel:
        call = getattr(slot_pb2_grpc.SlotServiceStub(channel), method)
        try:
            response = call(request, metadata=(("authorization", f"Bearer {token}"),))
        except grpc.RpcError as error:
            print(f"tacit: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print(json.dumps(MessageToDict(response, preserving_proto_field_name=True), indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds `tacit slot …` to the top-level parser."""
    slot = sub.add_parser("slot", help="a slot's mode: apprentice report, switch to online, history")
    slot.add_argument("--target", default="127.0.0.1:50051", help="server address")
    slot.add_argument("--data-dir", type=Path, default=Path("tacit-data"))
    slot.add_argument("--token-file", type=Path, default=None, help="default: <data-dir>/tokens.json")
    slot.set_defaults(func=cmd_slot)
    verbs = slot.add_subparsers(dest="slot_command", required=True)
    status = verbs.add_parser("status", help="mode, agreement, OPE estimates with intervals")
    status.add_argument("slot")
    set_mode = verbs.add_parser("set-mode", help="switch the slot's mode on command (audited)")
    set_mode.add_argument("slot")
    set_mode.add_argument("mode", choices=sorted(MODES))
    set_mode.add_argument("--reason", default="", help="kept in the history (no personal data)")
    history = verbs.add_parser("history", help="mode changes, newest first")
    history.add_argument("slot")
    history.add_argument("--page-size", type=int, default=20)
    history.add_argument("--page-token", default="")
