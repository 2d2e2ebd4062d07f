"""`tacit serve` with several processes on one port: rewards join wherever they land."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
from sqlalchemy import func, select

from tacit.server.auth import Role, read_token
from tacit.sim.client import rank_request
from tacit.store.db import Database
from tacit.store.schema import Decision, ModelVersion
from tacit.v1 import decision_pb2, decision_pb2_grpc


def test_two_worker_processes_share_the_port_and_join_rewards_across_them(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    config = tmp_path / "tacit.toml"
    config.write_text(
        "[server]\naddress = '127.0.0.1:0'\nworkers = 2\nlog_level = 'WARNING'\n"
        f"[storage]\ndata_dir = '{data_dir}'\n[learner]\ncheckpoint_interval_seconds = 0.2\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "tacit.cli", "--config", str(config), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "serving on" in line, line
        target = line.split("serving on ")[1].split()[0]
        metadata = (("authorization", f"Bearer {read_token(data_dir / 'tokens.json', Role.SERVICE)}"),)
        # Separate channels (and subchannel pools) reach both processes; a reward sent on another
        # channel than its Rank may land on the other process.
        channels = [
            grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(6)
        ]
        stubs = [decision_pb2_grpc.DecisionServiceStub(c) for c in channels]
        request = rank_request("home", "user-1", {"device": "mobile"}, [("a", {}), ("b", {}), ("c", {})])
        outcomes = []
        for index in range(60):
            ranked = stubs[index % 6].Rank(request, metadata=metadata)
            reward = stubs[(index + 1) % 6].Reward(
                decision_pb2.RewardRequest(event_id=ranked.event_id, value=1.0), metadata=metadata
            )
            outcomes.append(reward.outcome)
        for channel in channels:
            channel.close()
        assert outcomes == [decision_pb2.REWARD_OUTCOME_JOINED] * 60
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    db = Database.open(f"sqlite:///{data_dir / 'tacit.db'}")
    with db.transaction() as session:
        assert session.execute(select(func.count()).select_from(Decision)).scalar_one() == 60
        rewarded = session.execute(select(func.count()).where(Decision.reward == 1.0)).scalar_one()
        assert rewarded == 60
        # Only worker 0 learns: one chain of checkpoint versions, no duplicates.
        versions = session.execute(select(ModelVersion.version)).scalars().all()
        assert versions and len(versions) == len(set(versions))
    db.dispose()
