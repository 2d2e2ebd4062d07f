"""Auto-optimize through the real server: a slot started with a deliberately poor configuration
(it ignores the context and explores half the time) logs simulated traffic over gRPC on a real
port; AutoOptimize finds a better configuration on that log and starts it as a challenger; the
staged rollout, driven by the server's own rules, ships it and it becomes the slot's policy.
The driving helpers are the challenger tests' (`test_challengers`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest
from google.protobuf.json_format import Parse
from sqlalchemy import select

from tacit.cli import main
from tacit.server.auth import Role
from tacit.server.auto_optimize import AutoOptimizer
from tacit.server.config import ConfigError, load_settings
from tacit.sim.world import ContentSite
from tacit.store.schema import AuditRecord, AutoOptimizeRun
from tacit.v1 import experiment_pb2, experiment_pb2_grpc, model_pb2, model_pb2_grpc
from tests.conftest import ServerHandle
from tests.experiments.test_challengers import (
    REWARD_WINDOW,
    Driver,
    _changes,
    _drive_until_decided,
    _wait_for,
)
from tests.learning.test_training_service import error_reason

POOR = "--cb_explore_adf --epsilon 0.5 --ignore U"
GRID = ["--cb_explore_adf --squarecb -q UA", "--cb_explore_adf --squarecb -q UA -l 0.1"]


def _start(
    start_server: Callable[..., ServerHandle], database_url: str, **auto_optimize: object
) -> ServerHandle:
    return start_server(
        database_url,
        slots={
            "home": {
                "vw_args": POOR,
                "reward_window_seconds": REWARD_WINDOW,
                "auto_optimize_challenger": True,
            }
        },
        learner={"checkpoint_interval_seconds": 0.2, "reload_interval_seconds": 0.1},
        experiments={
            "evaluation_interval_seconds": 3600,
            "refresh_seconds": 0.05,
            "sequential_tuning_n": 1000,
        },
        auto_optimize={"grid": GRID, "margin": 0.02, "stages": [[50, 150], [100, 250]], **auto_optimize},
    )


def test_auto_optimize_finds_a_better_configuration_and_its_rollout_ships_it(
    database_url: str, start_server: Callable[..., ServerHandle], capsys: pytest.CaptureFixture[str]
) -> None:
    handle = _start(start_server, database_url)
    driver = Driver(handle, ContentSite(seed=21, n_candidates=6))
    driver.run(2400)
    time.sleep(REWARD_WINDOW + 0.5)  # every reward window closed, every decision flushed
    poor_rate = driver.arms[""].click_rate

    models = model_pb2_grpc.ModelServiceStub(handle.channel)
    md = handle.metadata(Role.EXPERIMENTER)
    runtime = handle.running.runtime
    # A dry run, and a slot that does not allow challengers: proposed, recorded, nothing started.
    cli = ["auto-optimize", "--target", handle.target, "--data-dir", str(handle.data_dir)]
    capsys.readouterr()
    assert main([*cli, "run", "--slot", "home", "--dry-run"]) == 0
    out = capsys.readouterr().out
    dry = Parse(out[out.index("{") :], model_pb2.AutoOptimizeRun())
    assert (dry.outcome, dry.experiment_id) == ("proposed", "") and "dry run" in dry.note, dry.note
    closed = runtime.settings.model_copy(deep=True)
    closed.slots["home"].auto_optimize_challenger = False
    refused = AutoOptimizer(runtime.db, closed, runtime.experiments).run(
        "home", "test", candidates=[dry.best_args]
    )
    assert refused.outcome == "proposed" and "auto_optimize_challenger is off" in refused.note
    assert runtime.experiments.list_experiments()[0] == []

    run = models.AutoOptimize(model_pb2.AutoOptimizeRequest(slot="home"), metadata=md)
    table = "\n".join(
        f"{c.vw_args:45s} ips {c.value:.3f} [{c.ci_low:.3f}, {c.ci_high:.3f}] {c.status} n={c.n}"
        for c in run.candidates
    )
    print(f"\nlogged click rate {poor_rate:.4f}; run {run.outcome}: {run.note}\n{table}")
    assert run.outcome == "started", run.note
    assert run.trigger == "command" and run.current_args == POOR and run.decisions == 2400
    assert [c.vw_args for c in run.candidates] == [POOR, *GRID] and run.candidates[0].current
    assert run.best_args in GRID and run.experiment_id == f"autoopt-{run.id}"
    best = next(c for c in run.candidates if c.vw_args == run.best_args)
    assert best.ci_low >= run.candidates[0].ci_low + 0.02 and best.status == "ok"

    # The stored run and its audit record (counts only, no argument string, no value).
    listed = models.ListAutoOptimizeRuns(model_pb2.AutoOptimizeListRunsRequest(slot="home"), metadata=md)
    capsys.readouterr()
    assert main([*cli, "list", "--slot", "home"]) == 0
    assert Parse(capsys.readouterr().out, model_pb2.AutoOptimizeListRunsResponse()) == listed
    assert [r.id for r in listed.runs] == [run.id, refused.id, dry.id] and listed.runs[0] == run
    assert [r.trigger for r in listed.runs] == ["command"] * 3
    with runtime.db.transaction() as session:
        audits = (
            session.execute(
                select(AuditRecord)
                .where(AuditRecord.payload_kind == "auto_optimize")
                .order_by(AuditRecord.seq)
            )
            .scalars()
            .all()
        )
    assert [a.correlation_id for a in audits] == [f"auto_optimize:{r}" for r in (dry.id, refused.id, run.id)]
    assert (
        '"experiment_started":1' in audits[-1].body_json and '"experiment_started":0' in audits[0].body_json
    )
    assert all("--cb_explore_adf" not in a.body_json for a in audits)

    # The staged rollout: the slot's poor bandit against the proposed configuration.
    experiments = experiment_pb2_grpc.ExperimentServiceStub(handle.channel)
    driver.arms.clear()
    looks = _drive_until_decided(handle, experiments, run.experiment_id, driver)
    rates = {arm: round(t.click_rate, 4) for arm, t in driver.arms.items()}
    print(f"looks (decisions, state, stage): {looks}\nexpected click rate per arm: {rates}")
    assert looks[-1][1] == experiment_pb2.EXPERIMENT_STATE_SHIPPED, (looks, rates)
    assert driver.arms["proposed"].click_rate > driver.arms["current"].click_rate
    steps = [(c.action, c.actor) for c in _changes(handle, run.experiment_id)]
    assert steps[:2] == [("create", "auto-optimize"), ("start", "auto-optimize")], steps
    assert steps[-2:] == [("ship", "system"), ("promote", "system")], steps
    start = _changes(handle, run.experiment_id)[1]
    assert f"auto-optimize run {run.id}" in start.reason and "lower bound" in start.reason

    # Shipped: the slot now serves and learns with the proposed arguments, and the next run
    # starts from them.
    _wait_for(lambda: runtime.models.get("home").vw_args == run.best_args)
    again = models.AutoOptimize(model_pb2.AutoOptimizeRequest(slot="home", candidates=[POOR]), metadata=md)
    assert again.current_args == run.best_args and again.outcome == "kept_current", again.note
    assert [c.vw_args for c in again.candidates] == [run.best_args, POOR]
    # Its shipped rollout no longer holds the slot: concluded by the next run, recorded as such.
    concluded = _changes(handle, run.experiment_id)[-1]
    assert (concluded.action, concluded.actor) == ("conclude", "auto-optimize")
    assert f"auto-optimize run {again.id}" in concluded.reason
    _wait_for(lambda: runtime.models.get("home").vw_args == run.best_args)


@pytest.mark.parametrize(
    ("request_fields", "code", "field"),
    [
        ({"slot": "Nope!"}, grpc.StatusCode.INVALID_ARGUMENT, "slot"),
        ({"slot": "sidebar"}, grpc.StatusCode.NOT_FOUND, "slot"),
        ({"slot": "home", "candidates": ["--cb_explore_adf --secret_flag_value"]},
         grpc.StatusCode.INVALID_ARGUMENT, "candidates[0]"),
        ({"slot": "home", "candidates": [GRID[0], "--cb_explore_adf -q UZ"]},
         grpc.StatusCode.INVALID_ARGUMENT, "candidates[1]"),
        ({"slot": "home", "candidates": ["--cb_explore_adf " + "-q UA " * 30]},
         grpc.StatusCode.INVALID_ARGUMENT, "candidates[0]"),
        ({"slot": "home", "candidates": [GRID[0]] * 17}, grpc.StatusCode.INVALID_ARGUMENT, "candidates"),
        ({"slot": "home"}, grpc.StatusCode.FAILED_PRECONDITION, "decisions"),
    ],
)  # fmt: skip
def test_bad_auto_optimize_requests_are_refused_naming_the_field_and_store_nothing(
    start_server: Callable[..., ServerHandle],
    request_fields: dict[str, object],
    code: grpc.StatusCode,
    field: str,
) -> None:
    handle = _start(start_server, "")
    models = model_pb2_grpc.ModelServiceStub(handle.channel)
    with pytest.raises(grpc.RpcError) as caught:
        models.AutoOptimize(
            model_pb2.AutoOptimizeRequest(**request_fields), metadata=handle.metadata(Role.EXPERIMENTER)
        )
    details = caught.value.details() or ""
    assert caught.value.code() == code and field in details, details
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        assert error_reason(caught.value) == "NOT_ENOUGH_DECISIONS"
    assert "secret_flag_value" not in details and "Nope!" not in details and "sidebar" not in details
    with handle.running.runtime.db.transaction() as session:
        assert session.execute(select(AutoOptimizeRun)).first() is None
    with pytest.raises(grpc.RpcError) as denied:
        models.AutoOptimize(
            model_pb2.AutoOptimizeRequest(slot="home"), metadata=handle.metadata(Role.SERVICE)
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_schedule_runs_on_the_configured_slots_and_records_its_trigger(
    start_server: Callable[..., ServerHandle],
) -> None:
    handle = _start(start_server, "", schedule=True, interval_seconds=1.0, slots=["home"], grid=GRID[:1])
    runtime = handle.running.runtime
    assert runtime.auto_optimizer is not None and runtime.auto_optimizer.run_scheduled() == []  # no log yet
    Driver(handle, ContentSite(seed=23, n_candidates=6)).run(60)
    time.sleep(REWARD_WINDOW + 0.5)
    md = handle.metadata(Role.EXPERIMENTER)
    models = model_pb2_grpc.ModelServiceStub(handle.channel)

    def scheduled() -> list[model_pb2.AutoOptimizeRun]:
        request = model_pb2.AutoOptimizeListRunsRequest(slot="home")
        return [r for r in models.ListAutoOptimizeRuns(request, metadata=md).runs if r.trigger == "schedule"]

    _wait_for(lambda: len(scheduled()) > 1, seconds=90)
    # Pages of one run, newest first, follow each other without a gap.
    first = models.ListAutoOptimizeRuns(model_pb2.AutoOptimizeListRunsRequest(page_size=1), metadata=md)
    second = models.ListAutoOptimizeRuns(
        model_pb2.AutoOptimizeListRunsRequest(page_size=1, page_token=first.next_page_token), metadata=md
    )
    assert len(first.runs) == len(second.runs) == 1 and first.runs[0].id > second.runs[0].id
    for bad, field in ((model_pb2.AutoOptimizeListRunsRequest(page_token="nope"), "page_token"),
                       (model_pb2.AutoOptimizeListRunsRequest(page_size=-1), "page_size")):  # fmt: skip
        with pytest.raises(grpc.RpcError) as caught:
            models.ListAutoOptimizeRuns(bad, metadata=md)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (caught.value.details() or "")
    run = scheduled()[-1]
    assert run.slot == "home" and run.decisions == 60 and run.outcome != "running"
    assert [c.vw_args for c in run.candidates] == [POOR, GRID[0]]
    with runtime.db.transaction() as session:
        stored = session.get(AutoOptimizeRun, run.id)
        assert stored is not None and stored.actor == "auto-optimize"
        assert session.execute(
            select(AuditRecord).where(AuditRecord.correlation_id == f"auto_optimize:{run.id}")
        ).scalar_one()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"grid": [GRID[0], "--cb_explore_adf --cb 4"]}, "grid[1]"),
        ({"margin": -0.1}, "margin"),
        ({"warmup_fraction": 1.0}, "warmup_fraction"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_an_unusable_auto_optimize_section_stops_the_start_naming_the_setting(
    section: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, auto_optimize=section)
    assert "auto_optimize" in str(caught.value) and message in str(caught.value), str(caught.value)
