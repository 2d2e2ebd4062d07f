"""kill -9 under load (SQLite's own harness, in spirit): every acknowledged write survives, none is half
written, and the decisions lost from the unflushed batch are counted at the next start."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
from sqlalchemy import func, select

from tacit.privacy.pseudonym import KeyRing
from tacit.server.auth import Role, read_token
from tacit.sim.client import rank_request
from tacit.store.db import Database
from tacit.store.schema import Decision, Reward
from tacit.v1 import audit_pb2, audit_pb2_grpc, decision_pb2, decision_pb2_grpc, event_pb2, event_pb2_grpc

CALLERS = 4


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(config: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tacit.cli", "--config", str(config), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert "serving on" in line, line
    return process, line.split("serving on ")[1].split()[0]


def _config(tmp_path: Path, data_dir: Path, metrics_port: int, url: str = "") -> Path:
    config = tmp_path / f"tacit-{metrics_port}.toml"
    config.write_text(
        f"[server]\naddress = '127.0.0.1:0'\nlog_level = 'WARNING'\nmetrics_port = {metrics_port}\n"
        f"[storage]\ndata_dir = '{data_dir}'\nurl = '{url}'\n"
        # A slow flush keeps decisions waiting in memory, so the kill finds some to lose.
        "[decision_log]\nflush_interval_ms = 300\n"
    )
    return config


class Load:
    """Callers that Rank, Reward and TrackEvents until the server dies, remembering every OK."""

    def __init__(self, target: str, token: str):
        self.channel = grpc.insecure_channel(target)
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.ranked: list[str] = []
        self.rewards: list[decision_pb2.RewardRequest] = []
        self.tracked: list[event_pb2.TrackEventsRequest] = []
        self.lock = threading.Lock()

    def run(self, caller: int, stop: threading.Event) -> None:
        decisions = decision_pb2_grpc.DecisionServiceStub(self.channel)
        events = event_pb2_grpc.EventServiceStub(self.channel)
        for index in range(1_000_000):
            if stop.is_set():
                return
            try:
                request = rank_request("home", f"user-{caller}", {"device": "mobile"}, [("a", {}), ("b", {})])
                ranked = decisions.Rank(request, metadata=self.metadata, timeout=10)
                with self.lock:
                    self.ranked.append(ranked.event_id)
                if index % 2 == 0:  # every other decision stays unrewarded: some wait in memory
                    continue
                reward = decision_pb2.RewardRequest(
                    event_id=ranked.event_id, value=1.0, request_id=f"req-{caller}-{index:07d}"
                )
                decisions.Reward(reward, metadata=self.metadata, timeout=10)
                with self.lock:
                    self.rewards.append(reward)
                batch = event_pb2.TrackEventsRequest(
                    events=[
                        event_pb2.Event(
                            event_id=f"ev-{caller}-{index:07d}-{part}",
                            subject_id=f"user-{caller}",
                            event_type="click",
                        )
                        for part in range(3)
                    ]
                )
                events.TrackEvents(batch, metadata=self.metadata, timeout=10)
                with self.lock:
                    self.tracked.append(batch)
            except grpc.RpcError:
                return  # the server died under us


def _lost_metric(port: int) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    match = re.search(r"^tacit_decisions_lost_total ([0-9.e+]+)$", body, re.MULTILINE)
    assert match, "tacit_decisions_lost_total not exported"
    return float(match.group(1))


def test_kill9_under_load_loses_no_acknowledged_write_and_counts_lost_decisions(
    database_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    url = "" if database_url.startswith("sqlite") else database_url  # SQLite: the default in data_dir
    process, target = _serve(_config(tmp_path, data_dir, _free_port(), url))
    try:
        load = Load(target, read_token(data_dir / "tokens.json", Role.SERVICE))
        stop = threading.Event()
        callers = [threading.Thread(target=load.run, args=(i, stop)) for i in range(CALLERS)]
        for thread in callers:
            thread.start()
        time.sleep(4.0)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        stop.set()
        for thread in callers:
            thread.join(timeout=30)
        load.channel.close()
    finally:
        if process.poll() is None:
            process.kill()
    assert len(load.rewards) > 20 and len(load.tracked) > 20, "the load never got going"

    metrics_port = _free_port()
    process, target = _serve(_config(tmp_path, data_dir, metrics_port, url))
    try:
        channel = grpc.insecure_channel(target)
        service = (("authorization", f"Bearer {read_token(data_dir / 'tokens.json', Role.SERVICE)}"),)
        decisions = decision_pb2_grpc.DecisionServiceStub(channel)
        events = event_pb2_grpc.EventServiceStub(channel)
        # Every acknowledged write is there: a retry with the same ids is a duplicate, not new.
        for reward in load.rewards:
            outcome = decisions.Reward(reward, metadata=service, timeout=10).outcome
            assert outcome == decision_pb2.REWARD_OUTCOME_DUPLICATE
        for batch in load.tracked:
            answer = events.TrackEvents(batch, metadata=service, timeout=10)
            assert (answer.accepted, answer.duplicates) == (0, 3)
        # The audit chain was not left half-written.
        auditor = (("authorization", f"Bearer {read_token(data_dir / 'tokens.json', Role.AUDITOR)}"),)
        verified = audit_pb2_grpc.AuditServiceStub(channel).VerifyAuditLog(
            audit_pb2.VerifyAuditLogRequest(), metadata=auditor, timeout=60
        )
        assert verified.ok, verified.reason
        db = Database.open(url or f"sqlite:///{data_dir / 'tacit.db'}")
        with db.transaction() as session:
            stored = set(session.execute(select(Decision.event_id)).scalars())
            # A decision's aggregate matches its joined reward rows (no half-applied reward).
            mismatched = session.execute(
                select(func.count())
                .select_from(Decision)
                .where(
                    Decision.reward_count
                    != select(func.count())
                    .where(Reward.event_id == Decision.event_id, Reward.late.is_(False))
                    .scalar_subquery()
                )
            ).scalar_one()
        db.dispose()
        assert mismatched == 0
        digest = KeyRing.load_or_create(data_dir / "keys.json").digest  # ids are stored as digests
        missing = len({digest(event_id) for event_id in load.ranked} - stored)
        lost = _lost_metric(metrics_port)
        # Counted: every acknowledged decision that is missing; at most the Ranks in flight beyond that.
        assert missing <= lost <= missing + CALLERS, (missing, lost)
        print(
            f"kill -9: {len(load.ranked)} ranked, {len(load.rewards)} rewards, {len(load.tracked)} batches; "
            f"missing decisions {missing}, counted lost {lost}"
        )
        channel.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_a_crash_loss_is_counted_at_the_next_start(tmp_path: Path) -> None:
    """Decisions acknowledged but never written (the flush never came) show up in the loss counter."""
    data_dir = tmp_path / "data"
    config = _config(tmp_path, data_dir, _free_port())
    config.write_text(config.read_text().replace("flush_interval_ms = 300", "flush_interval_ms = 600000"))
    process, target = _serve(config)
    try:
        channel = grpc.insecure_channel(target)
        service = (("authorization", f"Bearer {read_token(data_dir / 'tokens.json', Role.SERVICE)}"),)
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        request = rank_request("home", "user-1", {"device": "mobile"}, [("a", {}), ("b", {})])
        ranked = {stub.Rank(request, metadata=service, timeout=10).event_id for _ in range(7)}
        channel.close()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    metrics_port = _free_port()
    process, _target = _serve(_config(tmp_path, data_dir, metrics_port))
    try:
        db = Database.open(f"sqlite:///{data_dir / 'tacit.db'}")
        with db.transaction() as session:
            stored = set(session.execute(select(Decision.event_id)).scalars())
        db.dispose()
        digest = KeyRing.load_or_create(data_dir / "keys.json").digest  # ids are stored as digests
        assert not {digest(event_id) for event_id in ranked} & stored
        assert _lost_metric(metrics_port) == 7
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
