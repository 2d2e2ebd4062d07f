"""Bytes that are not a valid message get INVALID_ARGUMENT (reason MALFORMED_REQUEST), never INTERNAL."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from tacit.server.auth import Role

# A truncated length-delimited field, an invalid wire type, a truncated varint.
GARBAGE = [b"\x0a\xff\x01abc", b"\x0f\x00", b"\x08\xff\xff\xff"]
METHODS = [
    ("/tacit.v1.DecisionService/Rank", "unary"),
    ("/tacit.v1.DecisionService/Reward", "unary"),
    ("/tacit.v1.EventService/TrackEvents", "unary"),
    ("/tacit.v1.AuditService/ExportAuditRecords", "stream"),
    ("/grpc.health.v1.Health/Check", "unary"),
    ("/grpc.health.v1.Health/Watch", "stream"),
]


def _reason(error: grpc.RpcError) -> str:
    for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return ""


@pytest.mark.parametrize("method,kind", METHODS)
@pytest.mark.parametrize("payload", GARBAGE)
def test_malformed_bytes_are_invalid_argument(
    start_server: Any, method: str, kind: str, payload: bytes
) -> None:
    server = start_server()
    role = Role.AUDITOR if "Audit" in method else Role.SERVICE
    if kind == "unary":
        call = server.channel.unary_unary(method)
        with pytest.raises(grpc.RpcError) as raised:
            call(payload, metadata=server.metadata(role), timeout=10)
    else:
        stream = server.channel.unary_stream(method)
        with pytest.raises(grpc.RpcError) as raised:
            list(stream(payload, metadata=server.metadata(role), timeout=10))
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(raised.value) == "MALFORMED_REQUEST"
