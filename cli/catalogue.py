"""`tacit catalogue …`: a gRPC client of CatalogueService (content items Rank can use by id).

    tacit catalogue put items.jsonl          # JSON array or one object per line, in batches of 500
    tacit catalogue list [--tag news] [--available]
    tacit catalogue show item-0001
    tacit catalogue delete item-0001

An item is {"id": "...", "tags": ["news"], "features": {"topic": "politics"},
"available_from": "2026-12-01T00:00:00Z", "available_until": "2026-12-31T00:00:00Z"}
(tags, features and the window are optional). The server anonymizes the features
before storing them and audits every write.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from tacit.server.auth import Role, read_token
from tacit.server.catalogue import MAX_BATCH
from tacit.server.converters import to_timestamp
from tacit.server.converters.catalogue import features_message
from tacit.v1 import catalogue_pb2, catalogue_pb2_grpc

ITEM_KEYS = frozenset({"id", "tags", "features", "available_from", "available_until"})


class ItemFileError(ValueError):
    """The items file cannot be read; the message names the position, never a value."""


def read_items(path: Path) -> list[dict[str, Any]]:
    """A JSON array of items, or JSON Lines (one item per line; blank lines skipped)."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ItemFileError(f"{path}: not valid JSON (line {error.lineno})") from None
        objects = list(enumerate(data, start=1))
        where = "item"
    else:
        objects = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                objects.append((number, json.loads(line)))
            except json.JSONDecodeError:
                raise ItemFileError(f"{path}: line {number} is not valid JSON") from None
        where = "line"
    for position, obj in objects:
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            raise ItemFileError(f"{path}: {where} {position} is not an object with a string id")
        if set(obj) - ITEM_KEYS:
            raise ItemFileError(f"{path}: {where} {position} has keys other than {sorted(ITEM_KEYS)}")
    return [obj for _, obj in objects]


def item_message(obj: dict[str, Any], position: int) -> catalogue_pb2.CatalogueItem:
    features = obj.get("features") or {}
    tags = obj.get("tags") or []
    if not isinstance(features, dict) or not isinstance(tags, list):
        raise ItemFileError(f"item {position}: features must be an object and tags a list")
    message = catalogue_pb2.CatalogueItem(
        id=obj["id"], tags=[str(t) for t in tags], features=features_message(features)
    )
    for key in ("available_from", "available_until"):
        if obj.get(key):
            try:
                moment = datetime.fromisoformat(str(obj[key]).replace("Z", "+00:00"))
            except ValueError:
                raise ItemFileError(f"item {position}: {key} is not an ISO 8601 time") from None
            getattr(message, key).CopyFrom(to_timestamp(moment))
    return message


def _batches(items: list[dict[str, Any]]) -> Iterator[tuple[int, list[catalogue_pb2.CatalogueItem]]]:
    for start in range(0, len(items), MAX_BATCH):
        chunk = items[start : start + MAX_BATCH]
        yield start, [item_message(obj, start + offset + 1) for offset, obj in enumerate(chunk)]


def _stub(args: argparse.Namespace) -> tuple[catalogue_pb2_grpc.CatalogueServiceStub, Any, grpc.Channel]:
    token_file = args.token_file or Path(args.data_dir) / "tokens.json"
    token = read_token(Path(token_file), Role(args.role))
    channel = grpc.insecure_channel(args.target)
    return catalogue_pb2_grpc.CatalogueServiceStub(channel), (("authorization", f"Bearer {token}"),), channel


def cmd_catalogue(args: argparse.Namespace) -> int:
    batches: list[tuple[int, list[catalogue_pb2.CatalogueItem]]] = []
    if args.catalogue_command == "put":
        try:
            batches = list(_batches(read_items(args.file)))
        except (OSError, ItemFileError) as error:
            print(f"tacit: {error}", file=sys.stderr)
            return 2
    stub, metadata, channel = _stub(args)
    try:
        if args.catalogue_command == "put":
            return _put(stub, metadata, batches)
        if args.catalogue_command == "list":
            return _list(stub, metadata, args)
        if args.catalogue_command == "show":
            item = stub.GetCatalogueItem(catalogue_pb2.GetCatalogueItemRequest(id=args.id), metadata=metadata)
            print(json.dumps(MessageToDict(item, preserving_proto_field_name=True), indent=2))
            return 0
        stub.DeleteCatalogueItem(catalogue_pb2.DeleteCatalogueItemRequest(id=args.id), metadata=metadata)
        print("deleted")
        return 0
    except grpc.RpcError as error:
        print(f"tacit: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    finally:
        channel.close()


def _put(
    stub: catalogue_pb2_grpc.CatalogueServiceStub,
    metadata: Any,
    batches: list[tuple[int, list[catalogue_pb2.CatalogueItem]]],
) -> int:
    totals = {"created": 0, "updated": 0, "unchanged": 0, "dropped_fields": 0}
    for start, batch in batches:
        try:
            reply = stub.UpsertCatalogueItems(
                catalogue_pb2.UpsertCatalogueItemsRequest(items=batch), metadata=metadata
            )
        except grpc.RpcError as error:
            # items[i] in the server's message is relative to this batch.
            print(
                f"tacit: items {start + 1}-{start + len(batch)} refused ({start} stored before them): "
                f"{error.code().name}: {error.details()}",
                file=sys.stderr,
            )
            return 1
        for key in totals:
            totals[key] += getattr(reply, key)
    print(
        f"{sum(len(b) for _, b in batches)} items: {totals['created']} created, {totals['updated']} updated, "
        f"{totals['unchanged']} unchanged; {totals['dropped_fields']} undeclared feature entries dropped"
    )
    return 0


def _list(stub: catalogue_pb2_grpc.CatalogueServiceStub, metadata: Any, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="catalogue items")
    for column in ("id", "tags", "available from", "available until", "stale", "feature digest"):
        table.add_column(column)
    token, shown = "", 0
    while True:
        page = stub.ListCatalogueItems(
            catalogue_pb2.ListCatalogueItemsRequest(
                tags=args.tag, available_only=args.available, page_size=args.page_size, page_token=token
            ),
            metadata=metadata,
        )
        for item in page.items:
            table.add_row(
                escape(item.id),
                escape(", ".join(item.tags)),
                item.available_from.ToJsonString() if item.HasField("available_from") else "",
                item.available_until.ToJsonString() if item.HasField("available_until") else "",
                "yes" if item.stale else "",
                item.feature_digest,
            )
            shown += 1
        token = page.next_page_token
        if not token or (args.limit and shown >= args.limit):
            break
    Console(width=160).print(table)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds `tacit catalogue …` to the top-level parser."""
    catalogue = sub.add_parser("catalogue", help="register content items Rank can use by id and tag")
    catalogue.add_argument("--target", default="127.0.0.1:50051", help="server address")
    catalogue.add_argument("--data-dir", type=Path, default=Path("tacit-data"))
    catalogue.add_argument("--token-file", type=Path, default=None, help="default: <data-dir>/tokens.json")
    catalogue.add_argument(
        "--role", choices=[Role.ADMIN.value, Role.EXPERIMENTER.value], default=Role.ADMIN.value
    )
    catalogue.set_defaults(func=cmd_catalogue)
    verbs = catalogue.add_subparsers(dest="catalogue_command", required=True)
    put = verbs.add_parser("put", help="create or replace items from a JSON or JSON Lines file")
    put.add_argument("file", type=Path)
    listing = verbs.add_parser("list", help="items in id order")
    listing.add_argument("--tag", action="append", default=[], help="only items with this tag (repeatable)")
    listing.add_argument("--available", action="store_true", help="only items available now")
    listing.add_argument("--page-size", type=int, default=500)
    listing.add_argument("--limit", type=int, default=0, help="stop after about this many (0: all)")
    show = verbs.add_parser("show", help="one item as stored (anonymized features)")
    show.add_argument("id")
    delete = verbs.add_parser("delete", help="remove an item (its past decisions stay replayable)")
    delete.add_argument("id")
