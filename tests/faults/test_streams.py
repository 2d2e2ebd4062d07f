"""No client can freeze the server with streams: idle watchers, idle reflection, readers that never read.

Health's Watch holds no thread; other streams run on their own small budget and are
refused with RESOURCE_EXHAUSTED beyond it, or cancelled when their client goes idle.
Meanwhile Rank and health Check keep answering (1 s is a liveness bound, not a benchmark).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tacit.server.auth import Role
from tacit.sim.client import rank_request
from tacit.v1 import audit_pb2, audit_pb2_grpc, decision_pb2, decision_pb2_grpc, event_pb2

ServerFactory = Callable[..., Any]


def _fill_audit_log(server: Any, records: int) -> None:
    """Enough audit records that an export fills the transport's flow-control window."""
    from tacit.v1 import event_pb2_grpc

    stub = event_pb2_grpc.EventServiceStub(server.channel)
    made = 0
    while made < records:
        events = [
            event_pb2.Event(
                event_id=f"fill-{made + i:08d}", subject_id=f"subject-{made + i}", event_type="page_view"
            )
            for i in range(500)
        ]
        stub.TrackEvents(event_pb2.TrackEventsRequest(events=events), metadata=server.metadata(), timeout=60)
        made += len(events)


def _idle_requests(stop: threading.Event) -> Iterator[reflection_pb2.ServerReflectionRequest]:
    stop.wait()
    return
    yield  # a generator that sends nothing until the test ends


def _probe_all(server: Any, channel: grpc.Channel, rounds: int) -> list[str]:
    health = health_pb2_grpc.HealthStub(channel)
    ranks = decision_pb2_grpc.DecisionServiceStub(channel)
    request = rank_request("home", "user-1", {"device": "mobile"}, [("a", {}), ("b", {})])
    codes = []
    for _ in range(rounds):
        for call in (
            lambda: health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0),
            lambda: ranks.Rank(request, metadata=server.metadata(), timeout=1.0),
        ):
            try:
                call()
                codes.append("OK")
            except grpc.RpcError as error:
                codes.append(error.code().name)
    return codes


def test_two_hundred_idle_streams_do_not_starve_rank_or_health(
    database_url: str, start_server: ServerFactory
) -> None:
    server = start_server(database_url)  # the defaults: 16 unary threads, 4 streams
    _fill_audit_log(server, 3000)
    stop = threading.Event()
    channels = [grpc.insecure_channel(server.target, options=[("grpc.http2.bdp_probe", 0)]) for _ in range(4)]
    calls: list[Any] = []
    try:
        # Readers that never read come first: they take the stream budget and stall in it.
        audit = audit_pb2_grpc.AuditServiceStub(channels[2])
        auditor = server.metadata(Role.AUDITOR)
        exports = [
            audit.ExportAuditRecords(audit_pb2.ExportAuditRecordsRequest(), metadata=auditor)
            for _ in range(60)
        ]
        calls.extend(exports)
        time.sleep(1.0)  # the exports hold the budget before anything else arrives
        health = health_pb2_grpc.HealthStub(channels[0])
        for _ in range(80):  # no token, as issue 10 found
            calls.append(health.Watch(health_pb2.HealthCheckRequest(service="")))
        reflection = reflection_pb2_grpc.ServerReflectionStub(channels[1])
        reflections = [reflection.ServerReflectionInfo(_idle_requests(stop), timeout=60) for _ in range(60)]
        calls.extend(reflections)
        time.sleep(2.0)  # let every stream reach the server and settle
        probe = grpc.insecure_channel(server.target)
        codes = _probe_all(server, probe, rounds=10)
        probe.close()
        assert Counter(codes) == Counter({"OK": 20}), Counter(codes)
        # Beyond the budget, streams are refused at once with a clear status; the budgeted ones still stream.
        outcomes: Counter[str] = Counter()
        for call in exports + reflections:
            try:
                next(call)
                outcomes["streaming"] += 1
            except grpc.RpcError as error:
                outcomes[error.code().name] += 1
        assert outcomes == Counter({"RESOURCE_EXHAUSTED": 116, "streaming": 4}), outcomes
        print(
            f"200 idle streams: probes {dict(Counter(codes))}, export and reflection streams {dict(outcomes)}"
        )
    finally:
        stop.set()
        for call in calls:
            call.cancel()
        for channel in channels:
            channel.close()


def test_a_reader_that_never_reads_is_cut_off_and_its_slot_reused(start_server: ServerFactory) -> None:
    server = start_server(server={"max_streams": 2, "stream_idle_seconds": 1.0})
    _fill_audit_log(server, 3000)
    auditor = server.metadata(Role.AUDITOR)
    # Without BDP probing the client's window stays at 64 KiB: a reader that never reads stalls the sender.
    stalled_channel = grpc.insecure_channel(server.target, options=[("grpc.http2.bdp_probe", 0)])
    audit = audit_pb2_grpc.AuditServiceStub(stalled_channel)
    stalled = [
        audit.ExportAuditRecords(audit_pb2.ExportAuditRecordsRequest(), metadata=auditor) for _ in range(2)
    ]
    try:
        time.sleep(0.5)
        fresh = audit_pb2_grpc.AuditServiceStub(server.channel)
        deadline = time.monotonic() + 30
        lines = 0
        while time.monotonic() < deadline:
            try:
                lines = sum(
                    1
                    for _ in fresh.ExportAuditRecords(
                        audit_pb2.ExportAuditRecordsRequest(), metadata=auditor, timeout=30
                    )
                )
                break
            except grpc.RpcError as error:
                assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, error.code()
                time.sleep(0.5)
        assert lines >= 3000
        codes = set()
        for call in stalled:
            try:
                for _ in call:
                    pass
                codes.add("OK")
            except grpc.RpcError as error:
                codes.add(error.code().name)
        assert codes == {"CANCELLED"}, codes
    finally:
        for call in stalled:
            call.cancel()
        stalled_channel.close()


def test_reflection_is_served_under_v1_too(start_server: ServerFactory) -> None:
    server = start_server()
    method = server.channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    responses = list(method(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
    names = {s.name for s in responses[0].list_services_response.service}
    assert {"tacit.v1.DecisionService", "grpc.reflection.v1.ServerReflection"} <= names
    symbol = list(
        method(
            iter(
                [
                    reflection_pb2.ServerReflectionRequest(
                        file_containing_symbol="grpc.reflection.v1.ServerReflection"
                    )
                ]
            ),
            timeout=10,
        )
    )
    assert symbol[0].HasField("file_descriptor_response")


def test_an_idle_reflection_stream_is_cancelled_quietly(
    start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_server(server={"max_streams": 1, "stream_idle_seconds": 1.0})
    caplog.set_level(logging.INFO, logger="tacit")
    stop = threading.Event()
    reflection = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    idle = reflection.ServerReflectionInfo(_idle_requests(stop))
    try:
        with pytest.raises(grpc.RpcError) as ended:
            next(idle)
        assert ended.value.code() is grpc.StatusCode.CANCELLED
        # Its slot is free again: the next reflection call is served.
        answer = list(
            reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
            )
        )
        assert answer[0].HasField("list_services_response")
    finally:
        stop.set()
        idle.cancel()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_calls_beyond_the_admission_bound_are_refused_at_once_not_queued(start_server: ServerFactory) -> None:
    """`server.max_concurrent_rpcs` bounds what is admitted (open streams included): a flood is
    refused with RESOURCE_EXHAUSTED instead of growing the executor's queue without bound."""
    server = start_server(server={"max_concurrent_rpcs": 4, "max_streams": 4})
    ranks = decision_pb2_grpc.DecisionServiceStub(server.channel)
    request = decision_pb2.RankRequest(
        slot="home", subject_id="u-1", candidates=[decision_pb2.Candidate(id="a")]
    )
    assert ranks.Rank(request, metadata=server.metadata(), timeout=5).chosen_id == "a"
    stop = threading.Event()
    reflection = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    open_streams = [reflection.ServerReflectionInfo(_idle_requests(stop), timeout=60) for _ in range(4)]
    try:
        time.sleep(1.0)  # the four reach the server and stay open
        with pytest.raises(grpc.RpcError) as refused:
            ranks.Rank(request, metadata=server.metadata(), timeout=5)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        stop.set()
        for stream in open_streams:
            stream.cancel()
    # Room again once they end: the same call is served.
    deadline = time.monotonic() + 10
    while True:
        try:
            assert ranks.Rank(request, metadata=server.metadata(), timeout=5).chosen_id == "a"
            break
        except grpc.RpcError as error:
            if error.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
