"""`tacit demo`: a real server on the embedded default, simulated users, a verdict."""

from __future__ import annotations

import grpc
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from tacit.server.app import RunningServer
from tacit.server.auth import Role, read_token
from tacit.server.config import Settings
from tacit.sim.client import drive
from tacit.sim.world import ContentSite

LAST = 5_000


def run_demo(settings: Settings, decisions: int, seed: int) -> int:
    console = Console()
    running = RunningServer(settings, seed=seed)
    try:
        token = read_token(settings.tokens_path, Role.SERVICE) if settings.auth.enabled else ""
        console.print(f"server on {running.target}, data in {settings.storage.data_dir.resolve()}")
        site = ContentSite(seed=seed)
        with grpc.insecure_channel(running.target) as channel, tqdm(total=decisions, unit="decision") as bar:

            def progress(step: int, trace) -> None:  # type: ignore[no-untyped-def]
                bar.update(1)
                if step % 500 == 0 and trace.chosen:
                    bar.set_postfix(ctr=f"{sum(trace.chosen[-500:]) / len(trace.chosen[-500:]):.3f}")

            trace = drive(channel, token, site, decisions, on_step=progress)
    finally:
        running.stop()
    last = min(LAST, decisions)
    summary = trace.summary(last)
    table = Table(title=f"Click rate over the last {last:,} of {decisions:,} decisions")
    table.add_column("policy")
    table.add_column("expected click rate", justify="right")
    table.add_column("bandit relative to it", justify="right")
    table.add_row("Tacit bandit (VW)", f"{summary['bandit_ctr']:.4f}", "")
    table.add_row(
        "optimal (simulator's truth)", f"{summary['optimal_ctr']:.4f}", f"{summary['vs_optimal']:.1%}"
    )
    table.add_row("uniform random", f"{summary['random_ctr']:.4f}", f"{summary['vs_random']:.2f}x")
    console.print(table)
    console.print(
        f"observed clicks over the same window: {summary['observed_ctr']:.4f}; "
        f"progressive click rate over all decisions: {summary['progressive_ctr']:.4f}"
    )
    console.print(
        f"the server's data directory is left for inspection: {settings.storage.data_dir.resolve()}"
    )
    ok = summary["vs_optimal"] >= 0.8 and summary["vs_random"] >= 1.5
    console.print("target met (>= 80% of optimal, >= 1.5x random)" if ok else "target NOT met")
    return 0 if ok else 1
