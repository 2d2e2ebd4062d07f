"""Rank over loopback against a bare gRPC echo server and raw VW, measured in the same run.

    .venv/bin/python bench/bench_rank.py [--requests 3000] [--threads 4] [--workers 2]

Both servers run in their own processes, as in production, so that the client
does not share a GIL with them. Prints p50/p99 latency (sequential calls) and
throughput (concurrent callers) for 20 and 100 candidates, with ratios:
  p50 ratio = Tacit Rank p50 / (echo p50 + raw VW predict p50)
The last row per size is `tacit serve` with `--workers` processes on one port.
"""

from __future__ import annotations

import argparse
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

sys.path.insert(0, str(Path(__file__).parent))
from baseline import ECHO_METHOD, EchoServer, latencies  # noqa: E402

from tacit.learning.bandit import build_example  # noqa: E402
from tacit.server.auth import Role, read_token
from tacit.server.config import DEFAULT_VW_ARGS, Settings, load_settings
from tacit.server.workers import WorkerPool
from tacit.sim.client import bearer, rank_request
from tacit.sim.world import ContentSite, Visit
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="server processes for the last row")
    args = parser.parse_args()
    console = Console()
    settings = load_settings(
        None, server={"address": "127.0.0.1:0", "log_level": "WARNING", "max_workers": 16}
    )
    echo = EchoServer(16)
    echo_target = echo.target
    single, pooled = tacit_pool(settings, 1), tacit_pool(settings, args.workers)
    table = Table(title=f"Rank over loopback ({args.requests} calls; throughput with {args.threads} callers)")
    for column in ("candidates", "what", "p50 ms", "p99 ms", "calls/s", "ratio"):
        table.add_column(column, justify="right")
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
                    rows.append(
                        (
                            "Tacit Rank, 1 process",
                            rank_lat,
                            rate,
                            f"p50 {np.percentile(rank_lat, 50) / baseline:.2f}x (echo+VW); "
                            f"rate {rate / echo_rate:.2f}x echo",
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
            for name, lat, rate, ratio in rows:
                p50 = f"{np.percentile(lat, 50) * 1e3:.3f}" if lat is not None else ""
                p99 = f"{np.percentile(lat, 99) * 1e3:.3f}" if lat is not None else ""
                table.add_row(str(n_candidates), name, p50, p99, f"{rate:,.0f}", ratio)
    finally:
        echo.stop()
        single.stop()
        pooled.stop()
    console.print(table)
    console.print("goal: p50 within 2x (echo p50 + raw VW p50); >= 1,000 Rank/s with 20 candidates")


if __name__ == "__main__":
    main()
