"""AuditService: list, verify, export the audit chain; erase a subject."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import grpc

from tacit.privacy import audit_log
from tacit.privacy.audit import Anchor
from tacit.privacy.erasure import ErasureHook, erase_subject
from tacit.privacy.pseudonym import KeyRing
from tacit.server import converters
from tacit.server.config import Settings
from tacit.server.errors import FailedPrecondition, InvalidArgument
from tacit.store.db import Database
from tacit.v1 import audit_pb2, audit_pb2_grpc

MAX_PAGE = 1_000


def _filter(
    request: audit_pb2.ListAuditRecordsRequest | audit_pb2.ExportAuditRecordsRequest,
    keyring: KeyRing | None = None,
) -> audit_log.AuditFilter:
    client_id = getattr(request, "client_id", "")
    correlation_ids: tuple[str, ...] = ()
    if client_id and keyring is not None:
        # The client's id is matched by its digest under every held key; nothing of it is kept.
        converters.event_id_or_empty("client_id", client_id)
        correlation_ids = tuple(keyring.digests(client_id))
    return audit_log.AuditFilter(
        correlation_ids=correlation_ids,
        payload_kind=getattr(request, "payload_kind", "") or None,
        start_time=converters.timestamp_or_none(
            "start_time", request.start_time, request.HasField("start_time")
        ),
        end_time=converters.timestamp_or_none("end_time", request.end_time, request.HasField("end_time")),
    )


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(
        self,
        db: Database,
        keyring: KeyRing,
        policy_version: str,
        settings: Settings,
        on_erased: Callable[[str], None] | None = None,
        before_erase: Callable[[], object] | None = None,
        erasure_hooks: Sequence[ErasureHook] = (),
    ):
        self._erasure_hooks = tuple(erasure_hooks)
        self._on_erased = on_erased
        self._before_erase = before_erase
        self._db = db
        self._keyring = keyring
        self._policy_version = policy_version
        self._settings = settings

    def ListAuditRecords(
        self, request: audit_pb2.ListAuditRecordsRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ListAuditRecordsResponse:  # noqa: N802
        if request.page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        page_size = min(request.page_size or 100, MAX_PAGE)
        try:
            after = audit_log.decode_page_token(request.page_token)
        except ValueError as error:
            raise InvalidArgument("page_token", str(error)) from None
        rows, cursor = audit_log.list_records(self._db, _filter(request, self._keyring), page_size, after)
        return audit_pb2.ListAuditRecordsResponse(
            records=[
                audit_pb2.AuditRecord(
                    sequence=row.seq,
                    occurred_at=converters.to_timestamp(row.occurred_at),
                    payload_kind=row.payload_kind,
                    correlation_id=row.correlation_id,
                    policy_version=row.policy_version,
                    key_id=row.key_id,
                    body_json=row.body_json,
                    record_hash=row.record_hash,
                    prev_hash=row.prev_hash,
                )
                for row in rows
            ],
            next_page_token=audit_log.encode_page_token(cursor) if cursor is not None else "",
        )

    def VerifyAuditLog(
        self, request: audit_pb2.VerifyAuditLogRequest, context: grpc.ServicerContext
    ) -> audit_pb2.VerifyAuditLogResponse:  # noqa: N802
        anchor = None
        if request.anchor_json:
            try:
                anchor = Anchor.from_json(request.anchor_json)
            except ValueError as error:
                raise InvalidArgument("anchor_json", str(error)) from None
        result = audit_log.verify(self._db, anchor=anchor)
        return audit_pb2.VerifyAuditLogResponse(
            ok=result.ok,
            checked=result.checked,
            first_broken_sequence=result.first_broken_seq or 0,
            reason=result.reason or "",
        )

    def GetAuditAnchor(
        self, request: audit_pb2.GetAuditAnchorRequest, context: grpc.ServicerContext
    ) -> audit_pb2.GetAuditAnchorResponse:  # noqa: N802
        try:
            anchor = audit_log.make_anchor(self._db)
        except ValueError as error:
            raise FailedPrecondition(str(error), reason="AUDIT_CHAIN_BROKEN") from None
        return audit_pb2.GetAuditAnchorResponse(anchor_json=anchor.to_json(), sequence=anchor.seq)

    def ExportAuditRecords(
        self, request: audit_pb2.ExportAuditRecordsRequest, context: grpc.ServicerContext
    ) -> Iterator[audit_pb2.AuditRecordLine]:  # noqa: N802
        for line in audit_log.export_lines(self._db, _filter(request)):
            yield audit_pb2.AuditRecordLine(json=line)

    def EraseSubject(
        self, request: audit_pb2.EraseSubjectRequest, context: grpc.ServicerContext
    ) -> audit_pb2.EraseSubjectResponse:  # noqa: N802
        converters.require_text("subject_id", request.subject_id, self._settings.limits)
        request_id = converters.event_id_or_empty("request_id", request.request_id)
        if self._before_erase is not None:
            # Decisions still in memory must be on disk first, or they would land after the erasure.
            self._before_erase()
        result = erase_subject(
            self._db,
            self._keyring,
            self._policy_version,
            request.subject_id,
            # A client's request id is audited only as its keyed digest.
            correlation_id=self._keyring.digest(request_id) if request_id else "erasure",
            hooks=self._erasure_hooks,
            # Idempotency: one keyed digest of the request id and the subject together, so
            # a retry is answered with the first call's counts and audited once.
            request_key=self._keyring.digest(f"erase\x1f{request_id}\x1f{request.subject_id}")
            if request_id
            else "",
        )
        if self._on_erased is not None:
            # Caches (profiles) must not serve an erased subject either.
            for pseudonym in self._keyring.candidates(request.subject_id, "subject"):
                self._on_erased(pseudonym)
        return audit_pb2.EraseSubjectResponse(
            decisions_erased=result.decisions, events_erased=result.events, rewards_erased=result.rewards
        )
