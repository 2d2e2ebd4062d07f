"""`tacit audit`: the compliance team's client of AuditService.

    tacit audit list [--kind event.click] [--since 7d] [--until 2024-06-01] [--all]
    tacit audit show --event-id ID          # the records of one client event (or --request-id)
    tacit audit verify                      # exit 1 when the chain is broken
    tacit audit verify --anchor head.json   # ... or contradicts an anchor kept elsewhere
    tacit audit --data-dir D verify --database-url URL   # offline, with D/audit-keys.json
    tacit audit anchor [-o head.json]       # the head, signed: keep it outside the database
    tacit audit export [--output audit.jsonl]
    tacit audit summary [--since 30d]       # entities found per type and field
    tacit audit erase SUBJECT_ID

Calls use the auditor token from `--token-file` (default `<data-dir>/tokens.json`).
Nothing printed holds a raw value: records carry counts and names only, and
their correlation ids are keyed digests. `show` sends the client's id to the
server, which matches it by digest; the CLI never reads or prints a raw id.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

EXIT_OK, EXIT_BROKEN, EXIT_ERROR = 0, 1, 2
_RELATIVE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class CliError(Exception):
    """A usage or connection problem; printed without a traceback."""


def parse_moment(text: str, now: datetime | None = None) -> datetime:
    """An ISO date/time (UTC when no zone) or a duration back from now: 90m, 24h, 7d, 2w."""
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CliError(f"not a time: {text!r} (use ISO 8601 like 2024-06-01T12:00 or 7d, 24h)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _timestamp(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _period(args: argparse.Namespace) -> dict[str, Timestamp]:
    out: dict[str, Timestamp] = {}
    if getattr(args, "since", None):
        out["start_time"] = _timestamp(parse_moment(args.since))  # type: ignore[assignment]
    if getattr(args, "until", None):
        out["end_time"] = _timestamp(parse_moment(args.until))  # type: ignore[assignment]
    return out


class _Client:
    def __init__(self, args: argparse.Namespace) -> None:
        from tacit.server.auth import Role, read_token
        from tacit.v1 import audit_pb2_grpc

        token_file: Path = args.token_file or Path(args.data_dir) / "tokens.json"
        try:
            token = read_token(token_file, Role.AUDITOR)
        except FileNotFoundError:
            raise CliError(f"token file not found: {token_file} (use --token-file)") from None
        except (KeyError, ValueError) as error:
            raise CliError(f"no auditor token in {token_file}: {error}") from None
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.channel = grpc.insecure_channel(args.target)
        self.stub = audit_pb2_grpc.AuditServiceStub(self.channel)
        self.timeout = args.timeout

    def close(self) -> None:
        self.channel.close()


def _lines(client: _Client, args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    from tacit.v1 import audit_pb2

    request = audit_pb2.ExportAuditRecordsRequest(**_period(args))
    for line in client.stub.ExportAuditRecords(request, metadata=client.metadata):
        yield json.loads(line.json)


def cmd_list(args: argparse.Namespace, client: _Client, out: TextIO) -> int:
    from rich.console import Console
    from rich.table import Table

    from tacit.v1 import audit_pb2

    token = args.page_token or ""
    table = Table("seq", "time", "kind", "correlation", "fields", "entities", title="audit records")
    records: list[Any] = []
    while True:
        request = audit_pb2.ListAuditRecordsRequest(
            page_size=args.page_size,
            page_token=token,
            payload_kind=args.kind or "",
            client_id=getattr(args, "client_id", "") or "",
            **_period(args),
        )
        response = client.stub.ListAuditRecords(request, metadata=client.metadata, timeout=client.timeout)
        records.extend(response.records)
        token = response.next_page_token
        if not token or not args.all:
            break
    for record in records:
        body = json.loads(record.body_json)
        entities: Counter[str] = Counter()
        for fld in body["fields"]:
            entities.update(fld["entity_counts"])
        if args.json:
            out.write(json.dumps({"seq": record.sequence, "body": body}, sort_keys=True) + "\n")
            continue
        table.add_row(
            str(record.sequence),
            record.occurred_at.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds"),
            record.payload_kind,
            record.correlation_id,
            str(len(body["fields"])),
            ", ".join(f"{k}={v}" for k, v in sorted(entities.items())) or "-",
        )
    if not args.json:
        Console(file=out, width=160).print(table)
        if token:
            out.write(f"next page: --page-token {token}\n")
    elif token:
        sys.stderr.write(f"next page token: {token}\n")
    return EXIT_OK


def cmd_show(args: argparse.Namespace, client: _Client, out: TextIO) -> int:
    """Every record of one client id (event or request id), looked up by its digest on the server."""
    args.client_id = args.event_id or args.request_id
    args.kind, args.page_token, args.all = "", "", True
    return cmd_list(args, client, out)


def _report_verification(ok: bool, checked: int, broken: int | None, reason: str | None, out: TextIO) -> int:
    if ok:
        out.write(f"audit chain OK: {checked} records verified\n")
        return EXIT_OK
    if not broken:  # the anchor itself was refused: no record to name
        out.write(f"audit chain NOT VERIFIED: {reason}\n")
        return EXIT_BROKEN
    out.write(f"audit chain BROKEN at record {broken}: {reason} ({checked} records verified before it)\n")
    return EXIT_BROKEN


def _read_anchor(args: argparse.Namespace) -> Any:
    """The anchor named by --anchor (parsed), or None."""
    from tacit.privacy.audit import Anchor

    if not getattr(args, "anchor", None):
        return None
    try:
        text = Path(args.anchor).read_text("utf-8")
    except OSError as error:
        raise CliError(f"cannot read anchor file {args.anchor}: {error.strerror}") from None
    try:
        return Anchor.from_json(text)
    except ValueError as error:
        raise CliError(f"{args.anchor}: {error}") from None


class _Offline:
    """The database and audit keys, opened directly (read only: no migration)."""

    def __init__(self, args: argparse.Namespace) -> None:
        from tacit.privacy.audit_keys import AUDIT_KEYS_FILENAME, AuditKeyError, AuditKeys
        from tacit.store.db import Database, make_engine

        path: Path = args.audit_keys or Path(args.data_dir) / AUDIT_KEYS_FILENAME
        try:
            self.keys = AuditKeys.load(path)
        except FileNotFoundError:
            raise CliError(f"audit key file not found: {path} (use --audit-keys or --data-dir)") from None
        except AuditKeyError as error:
            raise CliError(str(error)) from None
        self.db = Database(make_engine(args.database_url))

    def close(self) -> None:
        self.db.dispose()


def cmd_verify(args: argparse.Namespace, out: TextIO) -> int:
    anchor = _read_anchor(args)
    if args.database_url:
        from tacit.privacy.audit_log import verify

        offline = _Offline(args)
        try:
            result = verify(offline.db, offline.keys, anchor=anchor)
        finally:
            offline.close()
        return _report_verification(result.ok, result.checked, result.first_broken_seq, result.reason, out)
    from tacit.v1 import audit_pb2

    client = _Client(args)
    try:
        response = client.stub.VerifyAuditLog(
            audit_pb2.VerifyAuditLogRequest(anchor_json=anchor.to_json() if anchor is not None else ""),
            metadata=client.metadata,
            timeout=client.timeout,
        )
    finally:
        client.close()
    return _report_verification(
        response.ok, response.checked, response.first_broken_sequence, response.reason, out
    )


def cmd_anchor(args: argparse.Namespace, out: TextIO) -> int:
    """Writes the signed head; refuses (exit 1) when the chain does not verify."""
    if args.database_url:
        from tacit.privacy.audit_log import make_anchor

        offline = _Offline(args)
        try:
            document = make_anchor(offline.db, offline.keys).to_json()
        except ValueError as error:
            out.write(f"audit chain BROKEN, no anchor written: {error}\n")
            return EXIT_BROKEN
        finally:
            offline.close()
    else:
        from tacit.v1 import audit_pb2

        client = _Client(args)
        try:
            response = client.stub.GetAuditAnchor(
                audit_pb2.GetAuditAnchorRequest(), metadata=client.metadata, timeout=client.timeout
            )
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION:  # type: ignore[attr-defined]
                raise
            out.write(f"audit chain BROKEN, no anchor written: {error.details()}\n")  # type: ignore[attr-defined]
            return EXIT_BROKEN
        finally:
            client.close()
        document = response.anchor_json
    if args.output:
        args.output.write_text(document + "\n", encoding="utf-8")
        seq = json.loads(document)["seq"]
        out.write(f"anchor of seq {seq} written to {args.output}; keep it outside this system\n")
    else:
        out.write(document + "\n")
    return EXIT_OK


def cmd_export(args: argparse.Namespace, client: _Client, out: TextIO) -> int:
    from tacit.v1 import audit_pb2

    target: TextIO = args.output.open("w", encoding="utf-8") if args.output else out
    count = 0
    try:
        request = audit_pb2.ExportAuditRecordsRequest(**_period(args))
        for line in client.stub.ExportAuditRecords(request, metadata=client.metadata):
            target.write(line.json + "\n")
            count += 1
    finally:
        if args.output:
            target.close()
    if args.output:
        out.write(f"exported {count} records to {args.output}\n")
    return EXIT_OK


def summarize(records: Iterator[dict[str, Any]]) -> tuple[Counter[tuple[str, str, str]], Counter[str], int]:
    """(kind, field, entity) -> count, outcomes per kind/field/outcome, and the record count."""
    entities: Counter[tuple[str, str, str]] = Counter()
    outcomes: Counter[str] = Counter()
    total = 0
    for record in records:
        total += 1
        body = record["body"]
        for fld in body["fields"]:
            outcomes[f"{body['payload_kind']}|{fld['field']}|{fld['outcome']}"] += 1
            for entity, count in fld["entity_counts"].items():
                entities[(body["payload_kind"], fld["field"], entity)] += int(count)
    return entities, outcomes, total


def cmd_summary(args: argparse.Namespace, client: _Client, out: TextIO) -> int:
    from rich.console import Console
    from rich.table import Table

    entities, outcomes, total = summarize(_lines(client, args))
    period = f"{args.since or 'start'} .. {args.until or 'now'}"
    console = Console(file=out, width=160)
    table = Table("payload kind", "field", "entity type", "found", title=f"entities found ({period})")
    for (kind, fld, entity), count in sorted(entities.items()):
        table.add_row(kind, fld, entity, str(count))
    console.print(table)
    dropped = Table("payload kind", "field", "outcome", "records", title="fields dropped (fail closed)")
    for key, count in sorted(outcomes.items()):
        kind, fld, outcome = key.split("|")
        if outcome.startswith("dropped_") and outcome != "dropped_policy":
            dropped.add_row(kind, fld, outcome, str(count))
    console.print(dropped)
    by_type: Counter[str] = Counter()
    for (_, _, entity), count in entities.items():
        by_type[entity] += count
    totals = ", ".join(f"{k}={v}" for k, v in sorted(by_type.items())) or "none"
    console.print(f"{total} records; entities by type: {totals}")
    return EXIT_OK


def cmd_erase(args: argparse.Namespace, client: _Client, out: TextIO) -> int:
    from tacit.v1 import audit_pb2

    response = client.stub.EraseSubject(
        audit_pb2.EraseSubjectRequest(subject_id=args.subject_id, request_id=args.request_id or ""),
        metadata=client.metadata,
        timeout=client.timeout,
    )
    out.write(
        f"erased: {response.decisions_erased} decisions, {response.events_erased} events, "
        f"{response.rewards_erased} rewards (an erasure record was appended to the audit log)\n"
    )
    return EXIT_OK


def run_audit(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        if args.audit_command == "verify":
            return cmd_verify(args, out)
        if args.audit_command == "anchor":
            return cmd_anchor(args, out)
        client = _Client(args)
        try:
            handler = {
                "list": cmd_list,
                "show": cmd_show,
                "export": cmd_export,
                "summary": cmd_summary,
                "erase": cmd_erase,
            }
            return handler[args.audit_command](args, client, out)
        finally:
            client.close()
    except CliError as error:
        sys.stderr.write(f"tacit audit: {error}\n")
        return EXIT_ERROR
    except grpc.RpcError as error:
        code = error.code().name if hasattr(error, "code") else "ERROR"  # type: ignore[union-attr]
        details = error.details() if hasattr(error, "details") else str(error)  # type: ignore[union-attr]
        sys.stderr.write(f"tacit audit: {code}: {details}\n")
        return EXIT_ERROR


def add_audit_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds `audit` and its subcommands to the `tacit` command."""
    audit = subparsers.add_parser("audit", help="list, verify, export, summarize the audit log; erase")
    audit.add_argument("--target", default="127.0.0.1:50051", help="server address (host:port)")
    audit.add_argument("--data-dir", type=Path, default=Path("tacit-data"))
    audit.add_argument("--token-file", type=Path, default=None, help="default: <data-dir>/tokens.json")
    audit.add_argument("--timeout", type=float, default=30.0, help="seconds per unary call")
    audit.set_defaults(func=run_audit)
    sub = audit.add_subparsers(dest="audit_command", required=True)

    def period(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--since", help="ISO time or duration back from now (7d, 24h)")
        parser.add_argument("--until", help="ISO time or duration back from now")

    listing = sub.add_parser("list", help="list records (a page, or --all)")
    listing.add_argument("--kind", help="payload kind, e.g. rank or event.click")
    period(listing)
    listing.add_argument("--page-size", type=int, default=50)
    listing.add_argument("--page-token", default="")
    listing.add_argument("--all", action="store_true", help="follow every page")
    listing.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    show = sub.add_parser("show", help="the records of one client event or request id")
    which = show.add_mutually_exclusive_group(required=True)
    which.add_argument("--event-id", help="an event_id as the client sent it (matched by its digest)")
    which.add_argument("--request-id", help="a request_id as the client sent it (e.g. of an erasure)")
    show.add_argument("--page-size", type=int, default=200)
    show.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    def offline(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--database-url", help="work offline from the database, not via the server")
        parser.add_argument(
            "--audit-keys", type=Path, default=None, help="offline: default <data-dir>/audit-keys.json"
        )

    verify = sub.add_parser("verify", help="verify the audit chain; exit 1 when broken")
    verify.add_argument("--anchor", type=Path, help="an anchor file from `tacit audit anchor`")
    offline(verify)
    anchor = sub.add_parser("anchor", help="write the signed chain head (an anchor to keep elsewhere)")
    anchor.add_argument("--output", "-o", type=Path, help="file to write (default stdout)")
    offline(anchor)
    export = sub.add_parser("export", help="stream records as JSON lines")
    period(export)
    export.add_argument("--output", "-o", type=Path, help="file to write (default stdout)")
    summary = sub.add_parser("summary", help="entities found per type and field over a period")
    period(summary)
    erase = sub.add_parser("erase", help="erase everything stored for a subject id")
    erase.add_argument("subject_id")
    erase.add_argument("--request-id", default="")
    return audit
