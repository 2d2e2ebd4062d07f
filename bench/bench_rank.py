"""Rank over loopback against a bare gRPC echo server and raw VW, measured in the same run.

    .venv/bin/python bench/bench_rank.py [--requests 3000] [--threads 4]

Prints p50/p99 latency (sequential calls) and throughput (concurrent callers)
for 20 and 100 candidates, with ratios against the baselines:
  p50 ratio = Tacit Rank p50 / (echo p50 + raw VW predict p50)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import vowpalwabbit
from rich.console import Console
from rich.table import Table

from tacit.learning.bandit import build_example
from tacit.server.app import RunningServer
from tacit.server.auth import Role, read_token
from tacit.server.config import DEFAULT_VW_ARGS, load_settings
from tacit.sim.client import bearer, rank_request
from tacit.sim.world import ContentSite
from tacit.v1 import decision_pb2

ECHO_METHOD = "/bench.Echo/Echo"


def start_echo_server(workers: int) -> tuple[grpc.Server, int]:
    """A bare gRPC server that answers every call with the bytes it received."""
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def latencies(call, requests) -> np.ndarray:  # type: ignore[no-untyped-def]
    for request in requests[:200]:
        call(request)
    out = np.empty(len(requests))
    for index, request in enumerate(requests):
        started = time.perf_counter()
        call(request)
        out[index] = time.perf_counter() - started
    return out


def throughput(call, requests, threads: int) -> float:  # type: ignore[no-untyped-def]
    chunks = [requests[i::threads] for i in range(threads)]

    def run(chunk) -> None:  # type: ignore[no-untyped-def]
        for request in chunk:
            call(request)

    started = time.perf_counter()
    with futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, chunks))
    return len(requests) / (time.perf_counter() - started)


def pooled_throughput(settings, requests, threads: int, workers: int) -> float:  # type: ignore[no-untyped-def]
    """Throughput of `tacit serve` with several processes sharing the port."""
    from tacit.server.workers import WorkerPool

    data = settings.model_dump()
    data["server"]["workers"] = workers
    data["storage"]["data_dir"] = str(Path(tempfile.mkdtemp(prefix="tacit-bench-pool-")))
    pool = WorkerPool(type(settings)(**data))
    pool.start()
    try:
        token = read_token(pool.settings.tokens_path, Role.SERVICE)
        metadata = bearer(token)
        # One channel per caller so that connections spread over the processes.
        channels = [
            grpc.insecure_channel(pool.target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(threads)
        ]
        stubs = [
            c.unary_unary(
                "/tacit.v1.DecisionService/Rank",
                request_serializer=decision_pb2.RankRequest.SerializeToString,
                response_deserializer=decision_pb2.RankResponse.FromString,
            )
            for c in channels
        ]
        chunks = [requests[i::threads] for i in range(threads)]
        for stub, chunk in zip(stubs, chunks, strict=True):
            for request in chunk[:50]:
                stub(request, metadata=metadata)

        def run(index: int) -> None:
            for request in chunks[index]:
                stubs[index](request, metadata=metadata)

        started = time.perf_counter()
        with futures.ThreadPoolExecutor(threads) as pool_threads:
            list(pool_threads.map(run, range(threads)))
        rate = len(requests) / (time.perf_counter() - started)
        for channel in channels:
            channel.close()
        return rate
    finally:
        pool.stop()


def visits(count: int, candidates: int, seed: int = 3):  # type: ignore[no-untyped-def]
    site = ContentSite(n_items=400, n_candidates=candidates, seed=seed)
    return list(site.visits(count))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="server processes for the throughput row")
    args = parser.parse_args()
    console = Console()
    data_dir = Path(tempfile.mkdtemp(prefix="tacit-bench-"))
    settings = load_settings(
        None,
        server={"address": "127.0.0.1:0", "log_level": "WARNING", "max_workers": 16},
        storage={"data_dir": str(data_dir)},
    )
    running = RunningServer(settings)
    token = read_token(settings.tokens_path, Role.SERVICE)
    echo, echo_port = start_echo_server(16)
    table = Table(title=f"Rank over loopback ({args.requests} calls; throughput with {args.threads} callers)")
    for column in ("candidates", "what", "p50 ms", "p99 ms", "calls/s", "ratio"):
        table.add_column(column, justify="right")
    try:
        for n_candidates in (20, 100):
            sample = visits(args.requests, n_candidates)
            requests = [
                rank_request(
                    "home",
                    v.subject_id,
                    {"device": v.device, "daypart": v.context["daypart"]},
                    [(i.item_id, {"topic": i.topic, "length": i.length}) for i in v.candidates],
                )
                for v in sample
            ]
            payloads = [r.SerializeToString() for r in requests]
            with grpc.insecure_channel(f"127.0.0.1:{echo_port}") as channel:
                echo_call = channel.unary_unary(ECHO_METHOD)
                echo_lat = latencies(echo_call, payloads)
                echo_rate = throughput(echo_call, payloads, args.threads)
            workspace = vowpalwabbit.Workspace(DEFAULT_VW_ARGS + " --quiet")
            examples = [
                build_example(
                    {"device": v.device, "daypart": v.context["daypart"]},
                    [{"topic": i.topic, "length": i.length, "id": i.item_id} for i in v.candidates],
                )
                for v in sample
            ]
            vw_lat = latencies(workspace.predict, examples)
            workspace.finish()
            metadata = bearer(token)
            with grpc.insecure_channel(running.target) as channel:
                stub = channel.unary_unary(
                    "/tacit.v1.DecisionService/Rank",
                    request_serializer=decision_pb2.RankRequest.SerializeToString,
                    response_deserializer=decision_pb2.RankResponse.FromString,
                )

                def rank(request, stub=stub, metadata=metadata):  # type: ignore[no-untyped-def]
                    return stub(request, metadata=metadata)

                rank_lat = latencies(rank, requests)
                rank_rate = throughput(rank, requests, args.threads)
            pool_rate = pooled_throughput(settings, requests, args.threads, args.workers)
            baseline = np.percentile(echo_lat, 50) + np.percentile(vw_lat, 50)
            rows = [
                ("bare gRPC echo", echo_lat, echo_rate, ""),
                ("raw VW predict", vw_lat, 1.0 / np.mean(vw_lat), ""),
                (
                    "Tacit Rank",
                    rank_lat,
                    rank_rate,
                    f"p50 {np.percentile(rank_lat, 50) / baseline:.2f}x (echo+VW); "
                    f"rate {rank_rate / echo_rate:.2f}x echo",
                ),
            ]
            rows.append(
                (
                    f"Tacit Rank, {args.workers} processes",
                    None,
                    pool_rate,
                    f"rate {pool_rate / echo_rate:.2f}x echo",
                )
            )
            for name, lat, rate, ratio in rows:
                if lat is None:
                    table.add_row(str(n_candidates), name, "", "", f"{rate:,.0f}", ratio)
                    continue
                table.add_row(
                    str(n_candidates),
                    name,
                    f"{np.percentile(lat, 50) * 1e3:.3f}",
                    f"{np.percentile(lat, 99) * 1e3:.3f}",
                    f"{rate:,.0f}",
                    ratio,
                )
    finally:
        echo.stop(0)
        running.stop(grace=1)
    console.print(table)
    console.print("goal: p50 within 2x (echo p50 + raw VW p50); >= 1,000 Rank/s with 20 candidates")


if __name__ == "__main__":
    main()
