"""Prometheus metrics: one process on the default registry, several workers summed by one scrape,
and a Grafana dashboard whose every query names metrics Tacit defines."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import promql_parser
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from tacit.server import metrics
from tacit.server.auth import Role, read_token
from tacit.sim.client import rank_request
from tacit.v1 import decision_pb2, decision_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
RANK = "/tacit.v1.DecisionService/Rank"
REWARD = "/tacit.v1.DecisionService/Reward"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by name and label set."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _with_name(samples: dict, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (sample_name, labels), value in samples.items() if sample_name == name}


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def _wait_for(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


# --- the definitions and the dashboard ------------------------------------------------------------


def _defined_metrics() -> dict[str, MetricWrapperBase]:
    return {
        metric._name: metric for metric in vars(metrics).values() if isinstance(metric, MetricWrapperBase)
    }


def _series_names() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every series name Tacit exports (with its type's suffixes): its metric and the labels it may carry."""
    names: dict[str, tuple[str, tuple[str, ...]]] = {}
    for name, metric in _defined_metrics().items():
        labels = tuple(metric._labelnames)
        if metric._type == "counter":
            names[f"{name}_total"] = (name, labels)
        elif metric._type == "histogram":
            names[f"{name}_bucket"] = (name, (*labels, "le"))
            names[f"{name}_count"] = (name, labels)
            names[f"{name}_sum"] = (name, labels)
        else:
            per_process = metric._multiprocess_mode.endswith("all")
            names[name] = (name, (*labels, "pid") if per_process else labels)
    return names


def _dashboard_queries() -> list[str]:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "tacit.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert queries, "the dashboard has no queries"
    return queries


def _selectors(expression: str) -> list[tuple[str | None, list[str]]]:
    """Metric names and matcher label names of every selector in a PromQL expression."""
    found: list[tuple[str | None, list[str]]] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append((node.name, [matcher.name for matcher in node.matchers.matchers]))

    promql_parser.walk(promql_parser.parse(expression), visit)
    return found


def test_every_dashboard_query_parses_and_names_only_defined_metrics() -> None:
    series = _series_names()
    referenced: set[str] = set()
    for query in _dashboard_queries():
        selectors = _selectors(query)  # raises on a query PromQL cannot parse
        assert selectors, f"query selects no metric: {query}"
        for name, matcher_labels in selectors:
            assert name in series, f"{query} names {name}, which Tacit does not export"
            metric, labels = series[name]
            unknown = set(matcher_labels) - set(labels) - {"job", "instance"}
            assert not unknown, f"{query} filters {name} on labels it does not have: {unknown}"
            referenced.add(metric)
    # And the other way round: every metric Tacit defines is on the dashboard.
    assert referenced == set(_defined_metrics())


def test_the_dashboard_check_rejects_a_misspelled_metric_and_a_broken_query() -> None:
    series = _series_names()
    assert all(name in series for name, _ in _selectors("rate(tacit_decisions_total[5m])"))
    assert [name for name, _ in _selectors("rate(tacit_decisions[5m])")] == ["tacit_decisions"]
    assert "tacit_decisions" not in series  # a counter is only exported with its _total suffix
    assert "tacit_rpc_seconds" not in series and "tacit_rpc_seconds_count" in series
    try:
        _selectors("sum(rate(tacit_decisions_total[5m])")
    except ValueError:
        pass
    else:
        raise AssertionError("an unbalanced query parsed")


def test_metric_labels_never_carry_request_values() -> None:
    # Method names, status codes, operator-configured slot names and fixed outcome words only.
    allowed = {"method", "code", "slot", "outcome"}
    for name, metric in _defined_metrics().items():
        assert set(metric._labelnames) <= allowed, name


# --- one process: the default registry ------------------------------------------------------------


def test_single_process_serves_the_default_registry_with_the_sampled_gauges(start_server, tmp_path) -> None:
    # A metrics port makes the runtime sample its gauges; `tacit serve` would serve them on that
    # port, here the test serves the same default registry on a free one.
    handle = start_server(server={"metrics_port": 9464, "metrics_sample_seconds": 0.1})
    endpoint = metrics.MetricsEndpoint(0)
    try:
        stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
        before = _samples(_scrape(endpoint.port))
        request = rank_request("home", "user-1", {"device": "mobile"}, [("a", {}), ("b", {})])
        for _ in range(5):
            ranked = stub.Rank(request, metadata=handle.metadata())
            stub.Reward(
                decision_pb2.RewardRequest(event_id=ranked.event_id, value=1.0), metadata=handle.metadata()
            )

        def learned_and_sampled() -> bool:
            now = _samples(_scrape(endpoint.port))
            return (
                (_value(now, "tacit_model_version", slot="home") or 0) >= 1
                and (_value(now, "tacit_audit_chain_length") or 0) >= 5
                and _value(now, "tacit_learner_backlog_decisions", slot="home") == 0
                and _value(now, "tacit_learner_newest_learned_timestamp_seconds", slot="home") is not None
            )

        _wait_for(learned_and_sampled, 60)
        after = _samples(_scrape(endpoint.port))
    finally:
        endpoint.close()

    def delta(name: str, **labels: str) -> float:
        return (_value(after, name, **labels) or 0.0) - (_value(before, name, **labels) or 0.0)

    assert delta("tacit_rpc_seconds_count", method=RANK, code="OK") == 5
    assert delta("tacit_rpc_seconds_count", method=REWARD, code="OK") == 5
    assert delta("tacit_decisions_total", slot="home") == 5
    assert delta("tacit_rewards_total", slot="home", outcome="joined") == 5
    assert _value(after, "tacit_decisions_pending") is not None
    newest = _value(after, "tacit_learner_newest_learned_timestamp_seconds", slot="home")
    assert newest is not None and time.time() - 120 < newest <= time.time()
    assert _value(after, "tacit_learner_backlog_decisions", slot="home") == 0
    assert REGISTRY.get_sample_value("tacit_model_version", {"slot": "home"}) is not None


# --- several processes: one scrape sums them ------------------------------------------------------


def _per_pid_count(metrics_dir: Path, pid: int, tmp_path: Path, name: str, **labels: str) -> float:
    """A sample's value as one process recorded it: the collector over that pid's files alone."""
    alone = tmp_path / f"pid-{pid}"
    alone.mkdir()
    for path in metrics_dir.glob(f"*_{pid}.db"):
        shutil.copy(path, alone / path.name)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(alone))
    return registry.get_sample_value(name, labels) or 0.0


def test_one_scrape_sums_the_counters_of_both_worker_processes(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    metrics_port = _free_port()
    config = tmp_path / "tacit.toml"
    config.write_text(
        "[server]\naddress = '127.0.0.1:0'\nworkers = 2\nlog_level = 'WARNING'\n"
        f"metrics_port = {metrics_port}\nmetrics_sample_seconds = 0.2\n"
        f"[storage]\ndata_dir = '{data_dir}'\n"
        "[learner]\ncheckpoint_interval_seconds = 0.2\nreload_interval_seconds = 0.2\n"
    )
    stale = data_dir / "metrics" / "counter_1.db"  # left by an earlier run: cleaned at start
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"stale")
    process = subprocess.Popen(
        [sys.executable, "-m", "tacit.cli", "--config", str(config), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    calls = 48
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "serving on" in line, line
        target = line.split("serving on ")[1].split()[0]
        assert f"127.0.0.1:{metrics_port}/metrics" in process.stdout.readline()
        metrics_dir = data_dir / "metrics"
        assert not stale.exists()
        assert metrics_dir.stat().st_mode & 0o777 == 0o700
        metadata = (("authorization", f"Bearer {read_token(data_dir / 'tokens.json', Role.SERVICE)}"),)
        # Sixteen connections: SO_REUSEPORT spreads them over both workers (all on one: 2**-15).
        channels = [
            grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(16)
        ]
        stubs = [decision_pb2_grpc.DecisionServiceStub(c) for c in channels]
        request = rank_request("home", "user-1", {"device": "mobile"}, [("a", {}), ("b", {}), ("c", {})])
        for index in range(calls):
            # Reward on Rank's own connection: the worker that ranked joins it (cross-worker joins
            # are test_workers.py's subject, this test counts).
            ranked = stubs[index % 16].Rank(request, metadata=metadata)
            outcome = stubs[index % 16].Reward(
                decision_pb2.RewardRequest(event_id=ranked.event_id, value=1.0), metadata=metadata
            )
            assert outcome.outcome == decision_pb2.REWARD_OUTCOME_JOINED
        for channel in channels:
            channel.close()

        def gauges_sampled() -> bool:
            now = _samples(_scrape(metrics_port))
            versions = _with_name(now, "tacit_model_version")
            return (
                len(versions) == 2
                and all(value >= 1 for value in versions.values())
                and (_value(now, "tacit_audit_chain_length") or 0) >= calls
                and _value(now, "tacit_decisions_logged_total") == calls
            )

        _wait_for(gauges_sampled, 60)
        text = _scrape(metrics_port)  # the one scrape every assertion below reads
        worker_pids = sorted(
            {
                int(m.group(1))
                for p in metrics_dir.iterdir()
                if (m := re.fullmatch(r"counter_(\d+)\.db", p.name))
            }
        )
        per_pid = {
            pid: _per_pid_count(metrics_dir, pid, tmp_path, "tacit_rpc_seconds_count", method=RANK, code="OK")
            for pid in worker_pids
        }
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
            assert process.stderr is not None
            print(process.stderr.read()[-5000:])
    (tmp_path / "scrape.txt").write_text(text)
    print(
        f"\nper-worker Rank counts {per_pid}\n"
        + "\n".join(
            line
            for line in text.splitlines()
            if line.startswith(
                ("tacit_decisions", "tacit_rewards", "tacit_model", "tacit_audit", "tacit_learner")
            )
            or (line.startswith("tacit_rpc_seconds_count") and "DecisionService" in line)
        )
    )
    samples = _samples(text)
    # Two worker processes wrote values, neither of them the parent that serves the endpoint.
    assert len(worker_pids) == 2 and process.pid not in worker_pids
    assert all(count > 0 for count in per_pid.values()), per_pid
    assert sum(per_pid.values()) == calls
    # The scrape shows the sums over both processes.
    assert _value(samples, "tacit_rpc_seconds_count", method=RANK, code="OK") == calls
    assert _value(samples, "tacit_rpc_seconds_count", method=REWARD, code="OK") == calls
    assert _value(samples, "tacit_decisions_total", slot="home") == calls
    assert _value(samples, "tacit_rewards_total", slot="home", outcome="joined") == calls
    assert _value(samples, "tacit_decisions_logged_total") == calls
    assert _value(samples, "tacit_decisions_lost_total") == 0
    assert _value(samples, "tacit_decisions_pending") is not None
    # One served-version series per live worker process.
    versions = _with_name(samples, "tacit_model_version")
    assert {dict(labels)["pid"] for labels in versions} == {str(pid) for pid in worker_pids}
    assert _value(samples, "tacit_audit_chain_length") >= calls
    # Only worker 0 learns: its learner's lag and backlog are there.
    assert _value(samples, "tacit_learner_newest_learned_timestamp_seconds", slot="home") is not None
    assert _value(samples, "tacit_learner_backlog_decisions", slot="home") is not None
    # A stopped worker's live gauges are gone; its counters stay.
    left = {p.name for p in (data_dir / "metrics").iterdir()}
    assert not any(name.startswith("gauge_live") for name in left), left
    assert {f"counter_{pid}.db" for pid in worker_pids} <= left
