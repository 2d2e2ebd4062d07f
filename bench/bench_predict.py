"""PredictConversion over loopback against a bare gRPC echo server, and where a score's time goes.

    .venv/bin/python bench/bench_predict.py [--requests 2000] [--subjects 400]

Starts `tacit serve` (one worker process) and the echo server (bench/baseline.py),
each in its own process, sends a simulated history with TrackEvents, trains and
registers a conversion model from this process on the same database (as
`tacit train conversion` does), then measures in the same run:
  * PredictConversion p50/p99 (sequential) for known subjects, with and without a
    context override, and for unknown subjects (default profile);
  * the bare echo server answering the same request bytes (the gRPC floor);
    p50 ratio = PredictConversion p50 / echo p50 (issue 12's goal: <= 2x);
  * in-process scoring of one row (the first 300 requests' subjects) by the
    registered version: the scikit-learn pipeline (CalibratedClassifierCV over
    Pipeline(ColumnTransformer, model)) that served before, and the compiled form
    the server serves now (tacit.learning.compiled), with the largest difference
    between their scores over all the requests' subjects;
  * ProfileStore.lookup in-process: cold (a database read) and warm (cache hit).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from baseline import ECHO_METHOD, EchoServer, latencies  # noqa: E402

from tacit.learning.classifiers import Task  # noqa: E402
from tacit.learning.profiles import ProfileStore  # noqa: E402
from tacit.learning.registry_models import ServedModel, active_record, load_bundle  # noqa: E402
from tacit.learning.training import TrainJob, run_training  # noqa: E402
from tacit.privacy.pseudonym import KeyRing  # noqa: E402
from tacit.server.auth import Role, read_token  # noqa: E402
from tacit.server.config import load_settings  # noqa: E402
from tacit.server.workers import WorkerPool  # noqa: E402
from tacit.sim.client import bearer, to_features  # noqa: E402
from tacit.store.db import Database  # noqa: E402
from tacit.v1 import event_pb2, event_pb2_grpc, prediction_pb2, prediction_pb2_grpc  # noqa: E402


def history(subjects: int, days: int, seed: int) -> list[event_pb2.Event]:
    """Visits, clicks and conversions whose rate rises with engagement and on desktop."""
    rng = np.random.default_rng(seed)
    end = datetime.now(UTC)
    events: list[event_pb2.Event] = []
    for s in range(subjects):
        engagement = rng.gamma(2.0, 0.5)
        device = ("mobile", "desktop", "tablet")[int(rng.integers(3))]
        for day in range(days):
            if rng.random() > min(0.85, 0.1 + 0.25 * engagement):
                continue
            moment = end - timedelta(days=days - day, seconds=float(rng.uniform(0, 60_000)))
            kinds = ["session_start", "page_view"] + ["click"] * int(rng.poisson(engagement))
            logit = -3.3 + 0.9 * math.log1p(engagement) + 0.8 * (device == "desktop")
            if rng.random() < 1 / (1 + math.exp(-logit)):
                kinds.append("conversion")
            for k, kind in enumerate(kinds):
                event = event_pb2.Event(
                    event_id=f"bench-{s:05d}-{day:03d}-{k:02d}",
                    subject_id=f"bench-user-{s:05d}",
                    event_type=kind,
                    properties=to_features({"device": device, "scroll_depth": float(rng.beta(2, 2))}),
                )
                event.occurred_at.FromDatetime(moment + timedelta(seconds=10 * k))
                events.append(event)
    return events


def row(table: Table, what: str, values: np.ndarray, baseline: float | None) -> None:
    p50, p99 = np.percentile(values, 50) * 1e3, np.percentile(values, 99) * 1e3
    ratio = f"{p50 / (baseline * 1e3):.2f}×" if baseline else "—"
    table.add_row(what, f"{p50:.3f}", f"{p99:.3f}", ratio)


def wait_for_model(predict: grpc.UnaryUnaryMultiCallable, metadata: list[tuple[str, str]]) -> None:
    """Until the server has loaded the newly registered version (it re-reads the registry)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            predict(prediction_pb2.PredictRequest(subject_id="warm-up"), metadata=metadata)
            return
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--subjects", type=int, default=400)
    parser.add_argument("--days", type=int, default=70)
    args = parser.parse_args()
    console = Console()
    data_dir = Path(tempfile.mkdtemp(prefix="tacit-bench-predict-"))
    settings = load_settings(
        None,
        server={"address": "127.0.0.1:0", "log_level": "WARNING", "max_workers": 16, "workers": 1},
        storage={"data_dir": str(data_dir)},
    )
    echo = EchoServer(16)
    pool = WorkerPool(settings)
    pool.start()
    db = Database.open(settings.database_url)
    metadata = bearer(read_token(settings.tokens_path, Role.SERVICE))
    try:
        events = history(args.subjects, args.days, seed=1)
        with grpc.insecure_channel(pool.target) as channel:
            stub = event_pb2_grpc.EventServiceStub(channel)
            for start in range(0, len(events), 500):
                batch = event_pb2.TrackEventsRequest(events=events[start : start + 500])
                stub.TrackEvents(batch, metadata=metadata)
        started = time.perf_counter()
        outcome = run_training(db, data_dir / "models", TrainJob(Task.CONVERSION))
        console.print(
            f"{len(events)} events, {outcome.rows} snapshots; trained {outcome.record.version} "
            f"({outcome.record.details['candidate']}) in {time.perf_counter() - started:.1f} s"
        )
        rng = np.random.default_rng(2)
        known = [f"bench-user-{int(s):05d}" for s in rng.integers(args.subjects, size=args.requests)]
        override = to_features({"device": "desktop", "visits_7d": 3.0})
        requests = {
            "PredictConversion, known subject": [prediction_pb2.PredictRequest(subject_id=s) for s in known],
            "PredictConversion, known + context override (audited)": [
                prediction_pb2.PredictRequest(subject_id=s, context=override) for s in known
            ],
            "PredictConversion, unknown subject (default profile)": [
                prediction_pb2.PredictRequest(subject_id=f"nobody-{i}") for i in range(args.requests)
            ],
        }
        table = Table(title=f"PredictConversion over loopback ({args.requests} sequential calls each)")
        for column in ("what", "p50 ms", "p99 ms", "p50 ratio vs echo"):
            table.add_column(column, justify="right")
        with grpc.insecure_channel(echo.target) as channel:
            echo_call = channel.unary_unary(ECHO_METHOD)
            payloads = [r.SerializeToString() for r in requests["PredictConversion, known subject"]]
            echo_lat = latencies(echo_call, payloads)
        echo_p50 = float(np.percentile(echo_lat, 50))
        row(table, "bare gRPC echo (same bytes)", echo_lat, None)
        with grpc.insecure_channel(pool.target) as channel:
            predict = prediction_pb2_grpc.PredictionServiceStub(channel).PredictConversion
            wait_for_model(predict, metadata)
            for what, batch in requests.items():
                row(table, what, latencies(lambda r: predict(r, metadata=metadata), batch), echo_p50)
        console.print(table)

        keyring = KeyRing.load_or_create(settings.keys_path)
        pseudonyms = [keyring.pseudonymize(s, "subject") for s in known]
        now = datetime.now(UTC)
        warm_store = ProfileStore(db, ttl_seconds=3600.0)
        feature_rows = [warm_store.lookup(p, now).features.as_dict() for p in pseudonyms]

        record = active_record(db, Task.CONVERSION.value)
        assert record is not None
        bundle = load_bundle(record)
        reference, compiled = ServedModel(record.version, bundle), ServedModel.load(record.version, bundle)
        scoring = Table(title=f"Scoring one row in-process ({record.version}, {record.details['candidate']})")
        for column in ("what", "p50 ms", "p99 ms", "ratio vs echo p50"):
            scoring.add_column(column, justify="right")
        # The pipeline takes milliseconds a row: a sample of the rows is enough for its percentiles.
        sample = feature_rows[:300]
        reference_lat = latencies(lambda r: reference.predict_proba([r]), sample)
        row(scoring, "scikit-learn pipeline (served before)", reference_lat, echo_p50)
        if compiled.compiled is not None:
            compiled_lat = latencies(lambda r: compiled.predict_proba([r]), sample)
            row(scoring, "compiled (served now)", compiled_lat, echo_p50)
            difference = np.abs(reference.predict_proba(feature_rows) - compiled.predict_proba(feature_rows))
            console.print(scoring)
            speedup = np.percentile(reference_lat, 50) / np.percentile(compiled_lat, 50)
            console.print(
                f"compiled vs pipeline: p50 ratio {1 / speedup:.3f} ({speedup:.0f}× faster); "
                f"largest score difference {difference.max():.2e} over {len(feature_rows)} rows"
            )
        else:
            console.print(scoring)
            console.print("this model does not compile: the server scores it with the pipeline")

        profiles = Table(title="ProfileStore.lookup in-process (what a profile adds to a score or to Rank)")
        for column in ("what", "p50 ms", "p99 ms", "ratio vs echo p50"):
            profiles.add_column(column, justify="right")
        cold_store = ProfileStore(db, ttl_seconds=0.0)
        cold = latencies(lambda p: cold_store.lookup(p, now), pseudonyms)
        row(profiles, "cold (events read from the database)", cold, echo_p50)
        warm = latencies(lambda p: warm_store.lookup(p, now), pseudonyms)
        row(profiles, "warm (cache hit, features rebuilt)", warm, echo_p50)
        console.print(profiles)
    finally:
        echo.stop()
        pool.stop()
        db.dispose()


if __name__ == "__main__":
    main()
