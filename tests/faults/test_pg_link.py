"""A PostgreSQL link cut and stalled through a proxy the test owns (Jepsen-style).

The only acceptable answers are OK or UNAVAILABLE; health goes NOT_SERVING while storage
is gone and SERVING again by itself; Rank answers OK throughout (its decisions wait in the
decision log) and every decision it acknowledged is committed once the link is back.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pg_proxy import PgProxy
from sqlalchemy import create_engine, func, select, text

from tacit.sim.client import rank_request
from tacit.store.schema import Decision, Reward
from tacit.v1 import decision_pb2, decision_pb2_grpc, event_pb2, event_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
ACCEPTABLE = {"OK", "UNAVAILABLE"}


class Caller:
    """Drives Rank, Reward, TrackEvents and health, counting every status by method."""

    def __init__(self, server: Any):
        self.server = server
        self.decisions = decision_pb2_grpc.DecisionServiceStub(server.channel)
        self.events = event_pb2_grpc.EventServiceStub(server.channel)
        self.health = health_pb2_grpc.HealthStub(server.channel)
        self.codes: Counter[tuple[str, str]] = Counter()
        self.ranked: list[str] = []
        self.rewarded: list[str] = []
        self._event = 0

    def _call(self, method: str, call: Callable[[], Any]) -> Any:
        try:
            result = call()
        except grpc.RpcError as error:
            self.codes[(method, error.code().name)] += 1
            return None
        self.codes[(method, "OK")] += 1
        return result

    def round(self) -> int:
        """One Rank, one Reward of it, one TrackEvents, one health Check; returns the health status."""
        md = self.server.metadata()
        request = rank_request(
            "home", f"user-{len(self.ranked)}", {"device": "mobile"}, [("a", {}), ("b", {})]
        )
        ranked = self._call("Rank", lambda: self.decisions.Rank(request, metadata=md, timeout=5))
        if ranked is not None:
            self.ranked.append(ranked.event_id)
            reward = decision_pb2.RewardRequest(event_id=ranked.event_id, value=1.0)
            if self._call("Reward", lambda: self.decisions.Reward(reward, metadata=md, timeout=30)):
                self.rewarded.append(ranked.event_id)
        self._event += 1
        event = event_pb2.Event(event_id=f"evt-fault-{self._event:06d}", subject_id="s-1", event_type="click")
        track = event_pb2.TrackEventsRequest(events=[event])
        self._call("TrackEvents", lambda: self.events.TrackEvents(track, metadata=md, timeout=30))
        status = self._call(
            "Health", lambda: self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
        )
        return status.status if status is not None else -1

    def until(self, wanted: int, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.round() == wanted:
                return
            time.sleep(0.2)
        raise AssertionError(
            f"health never became {health_pb2.HealthCheckResponse.ServingStatus.Name(wanted)}"
        )

    def until_rewards_commit(self, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            before = len(self.rewarded)
            self.round()
            if len(self.rewarded) > before:
                return
            time.sleep(0.2)
        raise AssertionError("Reward never succeeded again after the link came back")


def _until_cancelled(stream: Any) -> Any:
    try:
        yield from stream
    except grpc.RpcError as error:
        assert error.code() is grpc.StatusCode.CANCELLED, error.code()


def test_cut_and_stalled_link_give_only_ok_or_unavailable_and_recover(
    postgres_url: str, start_server: Callable[..., Any]
) -> None:
    proxy = PgProxy(("127.0.0.1", 5432))
    try:
        proxied = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        assert proxied != postgres_url
        server = start_server(
            proxied,
            storage={
                "connect_timeout_seconds": 2,
                "statement_timeout_seconds": 2,
                "pool_timeout_seconds": 2,
                "probe_interval_seconds": 0.3,
                "probe_timeout_seconds": 1,
            },
        )
        caller = Caller(server)
        watch = caller.health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=120)
        watched: list[int] = []
        watcher = threading.Thread(target=lambda: watched.extend(r.status for r in _until_cancelled(watch)))
        watcher.start()
        for _ in range(3):
            assert caller.round() == SERVING
        assert set(code for _, code in caller.codes) == {"OK"}
        for fault in (proxy.cut, proxy.stall):
            fault()
            caller.until(NOT_SERVING, within=30)
            for _ in range(3):
                caller.round()
            proxy.restore()
            caller.until(SERVING, within=30)
            caller.until_rewards_commit(within=30)
        codes = caller.codes
        assert {code for _, code in codes} <= ACCEPTABLE, codes
        assert {code for method, code in codes if method in ("Rank", "Health")} == {"OK"}, codes
        assert codes[("Reward", "UNAVAILABLE")] > 0 and codes[("TrackEvents", "UNAVAILABLE")] > 0, codes
        # Every acknowledged decision reaches the database after recovery, every OK reward is stored.
        direct = create_engine(postgres_url)
        deadline = time.monotonic() + 30
        with direct.connect() as connection:
            while time.monotonic() < deadline:
                logged = connection.execute(select(func.count()).select_from(Decision)).scalar_one()
                connection.rollback()
                if logged >= len(caller.ranked):
                    break
                time.sleep(0.2)
            ids = set(connection.execute(select(Decision.event_id)).scalars())
            rewarded = set(connection.execute(select(Reward.event_id)).scalars())
            connection.execute(text("SELECT 1"))
        direct.dispose()
        digest = server.running.runtime.keyring.digest  # ids are stored as keyed digests
        assert {digest(event_id) for event_id in caller.ranked} <= ids
        assert {digest(event_id) for event_id in caller.rewarded} <= rewarded
        watch.cancel()
        watcher.join(timeout=10)
        # A watcher saw the outages and the recoveries, with no polling.
        assert watched == [SERVING, NOT_SERVING, SERVING, NOT_SERVING, SERVING], watched
        print("statuses by method:", dict(codes))
        server.running.stop(grace=1)  # flush through the proxy before it goes away
    finally:
        proxy.close()


def test_calls_stuck_on_a_stalled_database_do_not_starve_rank_or_health(
    postgres_url: str, start_server: Callable[..., Any]
) -> None:
    """More storage-bound callers than unary threads, all stuck on the stall: Rank and health still answer."""

    proxy = PgProxy(("127.0.0.1", 5432))
    stop = threading.Event()
    writers: list[threading.Thread] = []
    try:
        server = start_server(
            postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"),
            server={"max_workers": 4},
            storage={"connect_timeout_seconds": 2, "statement_timeout_seconds": 2, "pool_timeout_seconds": 2},
        )
        events = event_pb2_grpc.EventServiceStub(server.channel)
        writer_codes: Counter[str] = Counter()

        def write(worker: int) -> None:
            for index in range(1_000_000):
                if stop.is_set():
                    return
                event = event_pb2.Event(
                    event_id=f"stuck-{worker}-{index:06d}", subject_id="s", event_type="click"
                )
                try:
                    events.TrackEvents(
                        event_pb2.TrackEventsRequest(events=[event]), metadata=server.metadata(), timeout=30
                    )
                    writer_codes["OK"] += 1
                except grpc.RpcError as error:
                    writer_codes[error.code().name] += 1

        proxy.stall()
        writers = [threading.Thread(target=write, args=(i,)) for i in range(8)]
        for thread in writers:
            thread.start()
        time.sleep(1.0)  # every unary thread is now waiting on the stalled link
        probe = Caller(server)
        ranks = decision_pb2_grpc.DecisionServiceStub(server.channel)
        request = rank_request("home", "user-1", {"device": "mobile"}, [("a", {}), ("b", {})])
        probes: Counter[str] = Counter()
        for _ in range(10):
            for call in (
                lambda: ranks.Rank(request, metadata=server.metadata(), timeout=1.0),
                lambda: probe.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0),
            ):
                try:
                    call()
                    probes["OK"] += 1
                except grpc.RpcError as error:
                    probes[error.code().name] += 1
            time.sleep(0.3)
        assert probes == Counter({"OK": 20}), probes
        stop.set()
        proxy.restore()
        for thread in writers:
            thread.join(timeout=60)
        assert set(writer_codes) <= ACCEPTABLE, writer_codes
        assert writer_codes["UNAVAILABLE"] > 0, writer_codes
        server.running.stop(grace=1)  # flush through the proxy before it goes away
    finally:
        stop.set()
        proxy.close()
        for thread in writers:
            thread.join(timeout=60)
