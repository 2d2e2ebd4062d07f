"""Rank with candidate ids only (features from the catalogue) against Rank with inline features.

    .venv/bin/python bench/bench_catalogue.py [--requests 3000] [--rounds 3] [--threads 4]

One `tacit serve` process (as in production, its own process); the same 400 items are
registered in its catalogue, and the same visits are ranked both ways: inline (every
candidate with its features, the way callers rank today) and by id (use_catalogue, no
features on the wire). Sequential latencies are measured call by call in alternation (an
inline call, then the same visit by id, and so on) so that load on a shared machine hits
both alike; throughput with concurrent callers after, in alternating passes (median of each).
Prints p50/p99 and calls/s for 20 and 100 candidates, with the ratios
  p50 ratio  = ids-only p50 / inline p50     (goal: <= 1.0, at least as fast)
  rate ratio = ids-only calls/s / inline calls/s
and the request sizes on the wire.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from baseline import latencies  # noqa: E402
from bench_rank import RANK_CODEC, RANK_METHOD, tacit_pool, throughput, visits  # noqa: E402

from tacit.server.auth import Role, read_token
from tacit.server.config import load_settings
from tacit.sim.client import bearer, rank_request, to_features
from tacit.sim.world import ContentSite
from tacit.v1 import catalogue_pb2, catalogue_pb2_grpc, decision_pb2

N_ITEMS = 400  # bench_rank's site: visits draw their candidates from these


def register_items(target: str, tokens: Path) -> None:
    """Every item of the simulated site, with the features inline callers send."""
    site = ContentSite(n_items=N_ITEMS, n_candidates=20, seed=3)
    items = [
        catalogue_pb2.CatalogueItem(
            id=i.item_id, features=to_features({"topic": i.topic, "length": i.length})
        )
        for i in site.items
    ]
    with grpc.insecure_channel(target) as channel:
        stub = catalogue_pb2_grpc.CatalogueServiceStub(channel)
        stub.UpsertCatalogueItems(
            catalogue_pb2.UpsertCatalogueItemsRequest(items=items),
            metadata=bearer(read_token(tokens, Role.ADMIN)),
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the requests per size")
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    console = Console(width=150)
    settings = load_settings(
        None, server={"address": "127.0.0.1:0", "log_level": "WARNING", "max_workers": 16}
    )
    pool = tacit_pool(settings, 1)
    table = Table(
        title=f"Rank inline vs ids only ({args.requests} visits x {args.rounds} passes, alternating)"
    )
    for column in ("candidates", "what", "request B", "p50 ms", "p99 ms", "calls/s", "ratio"):
        table.add_column(column, justify="right")
    verdicts: list[str] = []
    try:
        register_items(pool.target, pool.settings.tokens_path)
        metadata = bearer(read_token(pool.settings.tokens_path, Role.SERVICE))
        for n_candidates in (20, 100):
            sample = visits(args.requests, n_candidates)
            inline = [
                rank_request(
                    "home",
                    v.subject_id,
                    {"device": v.device, "daypart": str(v.context["daypart"])},
                    [(i.item_id, {"topic": i.topic, "length": i.length}) for i in v.candidates],
                )
                for v in sample
            ]
            by_id = []
            for request in inline:
                ids_only = decision_pb2.RankRequest()
                ids_only.CopyFrom(request)
                for candidate in ids_only.candidates:
                    candidate.ClearField("features")
                ids_only.use_catalogue = True
                by_id.append(ids_only)
            measured: dict[str, list[np.ndarray]] = {"inline": [], "ids": []}
            with grpc.insecure_channel(pool.target) as channel:
                stub = channel.unary_unary(RANK_METHOD, **RANK_CODEC)

                def rank(
                    request: decision_pb2.RankRequest, stub: object = stub, size: int = n_candidates
                ) -> object:
                    reply = stub(request, metadata=metadata)  # type: ignore[operator]
                    assert len(reply.ranking) == size  # every id resolved from the catalogue
                    return reply

                for _ in range(args.rounds):
                    pairs = latencies(
                        rank, [pair for both in zip(inline, by_id, strict=True) for pair in both]
                    )
                    measured["inline"].append(pairs[0::2])
                    measured["ids"].append(pairs[1::2])
            passes: dict[str, list[float]] = {"inline": [], "ids": []}
            for _ in range(args.rounds):  # alternating passes; the median of each
                for name, requests in (("inline", inline), ("ids", by_id)):
                    passes[name].append(
                        throughput(
                            pool.target,
                            RANK_METHOD,
                            requests,
                            args.threads,
                            codec=RANK_CODEC,
                            metadata=metadata,
                        )
                    )
            rates = {name: float(np.median(values)) for name, values in passes.items()}
            lat = {name: np.concatenate(parts) for name, parts in measured.items()}
            p50 = {name: float(np.percentile(values, 50)) for name, values in lat.items()}
            p99 = {name: float(np.percentile(values, 99)) for name, values in lat.items()}
            size = {
                "inline": float(np.mean([r.ByteSize() for r in inline])),
                "ids": float(np.mean([r.ByteSize() for r in by_id])),
            }
            ratio, rate_ratio = p50["ids"] / p50["inline"], rates["ids"] / rates["inline"]
            for name, label in (("inline", "inline features"), ("ids", "ids only (catalogue)")):
                table.add_row(
                    str(n_candidates),
                    label,
                    f"{size[name]:,.0f}",
                    f"{p50[name] * 1e3:.3f}",
                    f"{p99[name] * 1e3:.3f}",
                    f"{rates[name]:,.0f}",
                    f"p50 {ratio:.2f}x, rate {rate_ratio:.2f}x" if name == "ids" else "",
                )
            verdicts.append(
                f"{n_candidates} candidates: ids-only p50 ratio {ratio:.2f}x inline "
                f"({'at least as fast' if ratio <= 1.0 else 'SLOWER'}), throughput ratio {rate_ratio:.2f}x"
            )
    finally:
        pool.stop()
    console.print(table)
    for line in verdicts:
        console.print(line)


if __name__ == "__main__":
    main()
