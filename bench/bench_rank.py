"""Rank over loopback against a bare gRPC echo server and raw VW, measured in the same run.

    .venv/bin/python bench/bench_rank.py [--requests 3000] [--threads 4] [--workers 2]

Both servers run in their own processes, as in production, so that the client
does not share a GIL with them. Prints p50/p99 latency (sequential calls) and
throughput (concurrent callers) for 20 and 100 candidates, with ratios:
  p50 ratio = Tacit Rank p50 / (echo p50 + raw VW predict p50)
  p99 ratio = Tacit Rank p99 / echo p99
  rate ratio = Tacit Rank calls/s / echo calls/s (same callers, same requests)
The last row per size is `tacit serve` with `--workers` processes on one port.
Then every Rank figure of issue 12 with its ratio and goal, the stored bytes per
decision (read back from the single-process server's database), and the
learner's examples/s on those decisions.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import vowpalwabbit
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).parent))
from baseline import ECHO_METHOD, EchoServer, latencies  # noqa: E402

from tacit.learning.bandit import SlotModel, build_example  # noqa: E402
from tacit.server.auth import Role, read_token
from tacit.server.config import DEFAULT_VW_ARGS, Settings, load_settings
from tacit.server.workers import WorkerPool
from tacit.sim.client import bearer, rank_request
from tacit.sim.world import ContentSite, Visit
from tacit.store.candidate_sets import decision_candidates
from tacit.store.db import Database
from tacit.store.schema import AuditRecord, CandidateSet, Decision
from tacit.v1 import decision_pb2

RANK_METHOD = "/tacit.v1.DecisionService/Rank"


def throughput(target: str, method: str, requests: Sequence[Any], threads: int, **call: Any) -> float:
    """Calls/s with `threads` callers, one channel each so connections spread over processes."""
    channels = [
        grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(threads)
    ]
    stubs = [channel.unary_unary(method, **call.get("codec", {})) for channel in channels]
    metadata = call.get("metadata")
    chunks = [requests[i::threads] for i in range(threads)]
    for stub, chunk in zip(stubs, chunks, strict=True):
        for request in chunk[:50]:
            stub(request, metadata=metadata)

    def run(index: int) -> None:
        for request in chunks[index]:
            stubs[index](request, metadata=metadata)

    started = time.perf_counter()
    with futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, range(threads)))
    rate = len(requests) / (time.perf_counter() - started)
    for channel in channels:
        channel.close()
    return rate


def tacit_pool(base: Settings, workers: int) -> WorkerPool:
    data = base.model_dump()
    data["server"]["workers"] = workers
    data["storage"]["data_dir"] = str(Path(tempfile.mkdtemp(prefix=f"tacit-bench-{workers}-")))
    pool = WorkerPool(Settings(**data))
    pool.start()
    return pool


def visits(count: int, candidates: int, seed: int = 3) -> list[Visit]:
    return list(ContentSite(n_items=400, n_candidates=candidates, seed=seed).visits(count))


RANK_CODEC = {
    "request_serializer": decision_pb2.RankRequest.SerializeToString,
    "response_deserializer": decision_pb2.RankResponse.FromString,
}


def decision_bytes(database_url: str) -> dict[str, float]:
    """Stored bytes per decision in a server's database, measured on the rows themselves.

    A row's bytes are the lengths of its column values as the database holds them (JSON
    as its text); the candidate feature maps are counted once each (`candidate_sets`), spread
    over every decision. `inline` is what the same rows would weigh with the maps written
    into each row, the layout before migration 0005.
    """
    db = Database.open(database_url)
    try:
        with db.transaction() as session:
            rows = session.execute(select(Decision)).scalars().all()
            resolved = decision_candidates(session, rows)
            sets = session.execute(select(CandidateSet)).scalars().all()
            audits = (
                session.execute(select(AuditRecord).where(AuditRecord.payload_kind == "rank")).scalars().all()
            )
    finally:
        db.dispose()
    if not rows:
        return {}

    def size(value: Any) -> int:
        if value is None:
            return 0
        if isinstance(value, list | dict):
            return len(json.dumps(value, separators=(", ", ": ")))
        return len(str(value).encode())

    columns = [c.key for c in Decision.__table__.columns]
    row_bytes = [sum(size(getattr(row, c)) for c in columns) for row in rows]
    set_bytes = sum(len(s.digest) + size(s.features) for s in sets)
    inline = [
        b - size(row.candidate_refs) + size(features)
        for b, row, features in zip(row_bytes, rows, resolved, strict=True)
    ]
    audit_columns = [c.key for c in AuditRecord.__table__.columns]
    audit_bytes = sum(size(getattr(a, c)) for a in audits for c in audit_columns)
    n = len(rows)
    return {
        "decisions": n,
        "row": float(np.mean(row_bytes)),
        "sets": set_bytes / n,
        "lean": (sum(row_bytes) + set_bytes) / n,
        "inline": float(np.mean(inline)),
        "set_rows": len(sets) / n,
        "audit": audit_bytes / max(len(audits), 1),
    }


def learner_rate(database_url: str, limit: int = 2000) -> float:
    """Examples/s the learner's own work reaches: resolve the logged candidates, learn in VW."""
    db = Database.open(database_url)
    try:
        with db.transaction() as session:
            rows = session.execute(select(Decision).limit(limit)).scalars().all()
    finally:
        db.dispose()
    if not rows:
        return float("nan")
    model = SlotModel(DEFAULT_VW_ARGS)
    started = time.perf_counter()
    db = Database.open(database_url)
    try:
        with db.transaction() as session:
            candidates = decision_candidates(session, rows)
    finally:
        db.dispose()
    for row, actions in zip(rows, candidates, strict=True):
        model.learn(row.context, actions, row.chosen_index, 0.0, row.probabilities[row.chosen_index])
    rate = len(rows) / (time.perf_counter() - started)
    model.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="server processes for the last row")
    args = parser.parse_args()
    console = Console(width=150)
    settings = load_settings(
        None, server={"address": "127.0.0.1:0", "log_level": "WARNING", "max_workers": 16}
    )
    echo = EchoServer(16)
    echo_target = echo.target
    single, pooled = tacit_pool(settings, 1), tacit_pool(settings, args.workers)
    table = Table(title=f"Rank over loopback ({args.requests} calls; throughput with {args.threads} callers)")
    for column in ("candidates", "what", "p50 ms", "p99 ms", "calls/s", "ratio"):
        table.add_column(column, justify="right")
    goals: list[tuple[str, str, float, str, bool]] = []
    stored: dict[str, float] = {}
    learned = float("nan")
    try:
        for n_candidates in (20, 100):
            sample = visits(args.requests, n_candidates)
            contexts = [{"device": v.device, "daypart": str(v.context["daypart"])} for v in sample]
            candidates = [
                [(i.item_id, {"topic": i.topic, "length": i.length}) for i in v.candidates] for v in sample
            ]
            requests = [
                rank_request("home", v.subject_id, ctx, cands)
                for v, ctx, cands in zip(sample, contexts, candidates, strict=True)
            ]
            payloads = [r.SerializeToString() for r in requests]
            with grpc.insecure_channel(echo_target) as channel:
                echo_lat = latencies(channel.unary_unary(ECHO_METHOD), payloads)
            echo_rate = throughput(echo_target, ECHO_METHOD, payloads, args.threads)
            workspace = vowpalwabbit.Workspace(DEFAULT_VW_ARGS + " --quiet")
            examples = [
                build_example(ctx, [{**features, "id": cid} for cid, features in cands])
                for ctx, cands in zip(contexts, candidates, strict=True)
            ]
            vw_lat = latencies(workspace.predict, examples)
            workspace.finish()
            rows: list[tuple[str, np.ndarray | None, float, str]] = [
                ("bare gRPC echo", echo_lat, echo_rate, ""),
                ("raw VW predict", vw_lat, 1.0 / float(np.mean(vw_lat)), ""),
            ]
            baseline = float(np.percentile(echo_lat, 50) + np.percentile(vw_lat, 50))
            echo_p99 = float(np.percentile(echo_lat, 99))
            for pool in (single, pooled):
                metadata = bearer(read_token(pool.settings.tokens_path, Role.SERVICE))
                processes = pool.settings.server.workers
                rate = throughput(
                    pool.target, RANK_METHOD, requests, args.threads, codec=RANK_CODEC, metadata=metadata
                )
                if processes == 1:
                    with grpc.insecure_channel(pool.target) as channel:
                        stub = channel.unary_unary(RANK_METHOD, **RANK_CODEC)
                        rank_lat = latencies(lambda r, s=stub, m=metadata: s(r, metadata=m), requests)
                    p50, p99 = float(np.percentile(rank_lat, 50)), float(np.percentile(rank_lat, 99))
                    rows.append(
                        (
                            "Tacit Rank, 1 process",
                            rank_lat,
                            rate,
                            f"p50 {p50 / baseline:.2f}x (echo+VW); p99 {p99 / echo_p99:.2f}x echo; "
                            f"rate {rate / echo_rate:.2f}x echo",
                        )
                    )
                    p50_goal = 1.3 if n_candidates == 20 else 1.6
                    goals.append(
                        (
                            f"Rank, {n_candidates} candidates, p50",
                            f"{p50 * 1e3:.3f} ms vs echo+VW {baseline * 1e3:.3f} ms",
                            p50 / baseline,
                            f"<= {p50_goal}x",
                            p50 / baseline <= p50_goal,
                        )
                    )
                    if n_candidates == 20:
                        goals.append(
                            (
                                "Rank, 20 candidates, p99",
                                f"{p99 * 1e3:.3f} ms vs echo p99 {echo_p99 * 1e3:.3f} ms",
                                p99 / echo_p99,
                                "<= 2x",
                                p99 / echo_p99 <= 2.0,
                            )
                        )
                        goals.append(
                            (
                                f"Rank throughput, {args.threads} callers, one process",
                                f"{rate:,.0f}/s vs echo {echo_rate:,.0f}/s",
                                rate / echo_rate,
                                ">= 0.4x",
                                rate / echo_rate >= 0.4,
                            )
                        )
                else:
                    rows.append(
                        (
                            f"Tacit Rank, {processes} processes",
                            None,
                            rate,
                            f"rate {rate / echo_rate:.2f}x echo",
                        )
                    )
                    if n_candidates == 20:
                        goals.append(
                            (
                                f"Rank throughput, {args.threads} callers, server.workers = {processes}",
                                f"{rate:,.0f}/s vs echo {echo_rate:,.0f}/s",
                                rate / echo_rate,
                                ">= 0.7x",
                                rate / echo_rate >= 0.7,
                            )
                        )
            for name, lat, rate, ratio in rows:
                p50 = f"{np.percentile(lat, 50) * 1e3:.3f}" if lat is not None else ""
                p99 = f"{np.percentile(lat, 99) * 1e3:.3f}" if lat is not None else ""
                table.add_row(str(n_candidates), name, p50, p99, f"{rate:,.0f}", ratio)
            if n_candidates == 20:
                time.sleep(0.2)  # the decision log flushes every few milliseconds
                stored = decision_bytes(single.settings.database_url)
                learned = learner_rate(single.settings.database_url)
    finally:
        echo.stop()
        single.stop()
        pooled.stop()
    console.print(table)
    if stored:
        goals.append(
            (
                "decision row, 20 candidates",
                f"{stored['lean']:,.0f} B (row {stored['row']:,.0f} + feature maps {stored['sets']:,.0f}); "
                f"inline layout {stored['inline']:,.0f} B",
                stored["lean"] / stored["inline"],
                "<= 1,500 B",
                stored["lean"] <= 1500,
            )
        )
    summary = Table(title="Issue 12 goals (ratios measured in this run)")
    for column in ("figure", "measured", "ratio", "goal", "met"):
        summary.add_column(column, justify="right")
    for name, measured, ratio, goal, met in goals:
        summary.add_row(name, measured, f"{ratio:.2f}x", goal, "yes" if met else "NO")
    console.print(summary)
    if stored:
        console.print(
            f"per decision (20 candidates, {stored['decisions']:.0f} decisions): "
            f"stored {stored['lean']:,.0f} B, new candidate_sets rows {stored['set_rows']:.3f}, "
            f"rank audit record {stored['audit']:,.0f} B; "
            f"learner (resolve + VW learn) {learned:,.0f} examples/s"
        )


if __name__ == "__main__":
    main()
