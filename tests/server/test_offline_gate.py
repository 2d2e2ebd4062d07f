"""The offline gate on StartExperiment, through a real server on a log the simulator wrote.

The ContentSite simulator drives Rank and Reward through the slot's bandit (which logs its
propensities and learns); then experiments are started on that slot. An arm whose IPS
lower bound (95% betting interval, clipped to the slot's [0, 1] rewards) is below the
control's by more than the tolerance is refused unless forced; the forced start is in the
history. The numbers are recomputed here from the same log with `evaluate_policies`.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from tacit.cli import main as tacit_main
from tacit.learning.evaluation import evaluate_policies
from tacit.server.auth import Role
from tacit.server.offline_gate import REFUSED_REASON, offline_policy
from tacit.sim.client import drive
from tacit.sim.world import ContentSite
from tacit.v1 import experiment_pb2, experiment_pb2_grpc

DECISIONS = 1_200


def _reason(error: grpc.RpcError) -> str:
    for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return ""


def _create(stub: Any, md: Any, experiment_id: str, control: str, treatment: str, tolerance: float) -> None:
    stub.CreateExperiment(
        experiment_pb2.CreateExperimentRequest(
            experiment_id=experiment_id,
            experiment=experiment_pb2.Experiment(
                slot="home",
                arms=[
                    experiment_pb2.Arm(name="control", policy=control, weight=0.5),
                    experiment_pb2.Arm(name="treatment", policy=treatment, weight=0.5),
                ],
                primary_metric="click_through",
                guardrails=[experiment_pb2.Guardrail(metric="conversion", tolerance=tolerance)],
                stages=[experiment_pb2.Stage(percent=10), experiment_pb2.Stage(percent=100)],
            ),
        ),
        metadata=md,
    )


def _history(stub: Any, md: Any, experiment_id: str) -> list[Any]:
    return list(
        stub.ListExperimentChanges(
            experiment_pb2.ListExperimentChangesRequest(name=f"experiments/{experiment_id}"), metadata=md
        ).changes
    )


def _settled(handle: Any) -> None:
    """Waits until the learner has checkpointed every decision, so the slot's model stops changing."""
    from tacit.learning.freshness import learning_backlog

    handle.running.runtime.decision_log.flush()
    deadline = time.monotonic() + 120
    while learning_backlog(handle.running.runtime.db, "home").pending_decisions > 0:
        assert time.monotonic() < deadline, "the learner did not catch up"
        time.sleep(0.2)


def test_a_start_below_control_offline_is_refused_unless_forced(start_server: Callable[..., Any]) -> None:
    handle = start_server(seed=11)
    drive(handle.channel, handle.token(Role.SERVICE), ContentSite(n_candidates=8, seed=4), DECISIONS)
    _settled(handle)
    stub = experiment_pb2_grpc.ExperimentServiceStub(handle.channel)
    md = handle.metadata(Role.EXPERIMENTER)

    # The gate's numbers, computed independently from the same log.
    settings = handle.settings.slots["home"]
    estimates = {
        e.policy: e
        for e in evaluate_policies(
            handle.running.runtime.db,
            "home",
            settings.vw_args,
            settings.default_reward,
            ["current", "uniform"],
            reward_range=(0.0, 1.0),
            limit=20_000,
            estimators=("ips",),
        )  # fmt: skip
    }
    bandit, uniform = estimates["current"], estimates["uniform"]
    print(f"\nbandit IPS {bandit.value:.4f} [{bandit.ci_low:.4f}, {bandit.ci_high:.4f}] {bandit.status}")
    print(f"uniform IPS {uniform.value:.4f} [{uniform.ci_low:.4f}, {uniform.ci_high:.4f}] {uniform.status}")
    tolerance = 0.02 * abs(bandit.value)
    assert uniform.ci_low < bandit.ci_low - tolerance  # the premise: uniform is the risky arm

    # control = the learned bandit, treatment = uniform: refused, nothing changes.
    _create(stub, md, "risky", "bandit", "uniform", 0.02)
    start = experiment_pb2.ExperimentActionRequest(name="experiments/risky", reason="try it")
    with pytest.raises(grpc.RpcError) as refused:
        stub.StartExperiment(start, metadata=md)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _reason(refused.value) == REFUSED_REASON
    details = refused.value.details()
    assert "offline gate refused: experiment.arms[1]" in details and "force" in details
    assert "treatment" not in details and "uniform" not in details  # no request value repeated
    assert f"{bandit.ci_low:.4g}" in details and f"{uniform.ci_low:.4g}" in details
    draft = stub.GetExperiment(experiment_pb2.GetExperimentRequest(name="experiments/risky"), metadata=md)
    assert draft.state == experiment_pb2.EXPERIMENT_STATE_DRAFT
    assert [c.action for c in _history(stub, md, "risky")] == ["create"]

    # force on any other action is a bad request, named.
    with pytest.raises(grpc.RpcError) as misuse:
        stub.PauseExperiment(
            experiment_pb2.ExperimentActionRequest(name="experiments/risky", force=True), metadata=md
        )
    assert misuse.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert misuse.value.details().startswith("force")

    # Forced: it starts, and the history says it was forced, past what, by whom.
    forced = experiment_pb2.ExperimentActionRequest(name="experiments/risky", reason="try it", force=True)
    running = stub.StartExperiment(forced, metadata=md)
    assert running.state == experiment_pb2.EXPERIMENT_STATE_RUNNING
    start_change = _history(stub, md, "risky")[-1]
    assert start_change.action == "start" and start_change.actor == "experimenter"
    assert start_change.reason.startswith("try it; FORCED past the offline gate refused: treatment")
    stub.ConcludeExperiment(experiment_pb2.ExperimentActionRequest(name="experiments/risky"), metadata=md)

    # The same through the CLI: refused with the reason, then `--force`.
    _create(stub, md, "risky-cli", "bandit", "uniform", 0.02)
    base = ["experiment", "--target", handle.target, "--data-dir", str(handle.data_dir), "start", "risky-cli"]
    out, err = io.StringIO(), io.StringIO()
    real_out, real_err, sys.stdout, sys.stderr = sys.stdout, sys.stderr, out, err
    try:
        refused_code = tacit_main(base)
        forced_code = tacit_main([*base, "--force"])
    finally:
        sys.stdout, sys.stderr = real_out, real_err
    assert refused_code == 1 and "FAILED_PRECONDITION: offline gate refused" in err.getvalue()
    assert forced_code == 0
    assert "FORCED past the offline gate" in _history(stub, md, "risky-cli")[-1].reason
    stub.ConcludeExperiment(experiment_pb2.ExperimentActionRequest(name="experiments/risky-cli"), metadata=md)

    # The other way round the gate passes without force, and says so in the history.
    _create(stub, md, "safe", "uniform", "bandit", 0.02)
    out = io.StringIO()
    real, sys.stdout = sys.stdout, out
    try:
        code = tacit_main(
            ["experiment", "--target", handle.target, "--data-dir", str(handle.data_dir), "start", "safe"]
        )
    finally:
        sys.stdout = real
    assert code == 0, out.getvalue()
    start_change = _history(stub, md, "safe")[-1]
    assert start_change.action == "start"
    assert start_change.reason.startswith("started; offline gate passed")


def test_a_fresh_slot_is_not_judged_and_the_start_says_so(start_server: Callable[..., Any]) -> None:
    handle = start_server()
    stub = experiment_pb2_grpc.ExperimentServiceStub(handle.channel)
    md = handle.metadata(Role.EXPERIMENTER)
    _create(stub, md, "fresh", "bandit", "uniform", 0.02)
    running = stub.StartExperiment(
        experiment_pb2.ExperimentActionRequest(name="experiments/fresh"), metadata=md
    )
    assert running.state == experiment_pb2.EXPERIMENT_STATE_RUNNING
    assert "offline gate: not judged (slot home has 0 decisions" in _history(stub, md, "fresh")[-1].reason


@pytest.mark.parametrize(
    ("policy", "offline"),
    [
        ("bandit", "current"),
        ("uniform", "uniform"),
        ("static:first", "static:first"),
        ("bandit:--cb_explore_adf --squarecb", "vw:--cb_explore_adf --squarecb"),
        ("model:v3", None),
        ("bandit:", None),
    ],
)
def test_which_arm_policies_are_evaluated_offline(policy: str, offline: str | None) -> None:
    assert offline_policy(policy) == offline


def _draft(guardrails: tuple[Any, ...], control_policy: str = "bandit") -> Any:
    from datetime import UTC, datetime, timedelta

    from tacit.experiments.rules import Stage
    from tacit.experiments.service import ArmConfig, Experiment, ExperimentDefinition, ExperimentState

    definition = ExperimentDefinition(
        experiment_id="unit",
        slot="home",
        arms=(ArmConfig("control", control_policy, 0.5), ArmConfig("treatment", "uniform", 0.5)),
        primary_metric="click_through",
        stages=(Stage(100.0, 0, timedelta(0)),),
        guardrails=guardrails,
    )
    now = datetime.now(UTC)
    return Experiment(definition, ExperimentState.DRAFT, 0, now, now, "experimenter")


def test_the_tolerance_is_the_tightest_guardrail_on_the_reward_scale() -> None:
    from tacit.experiments.rules import Guardrail
    from tacit.experiments.stats import ToleranceKind
    from tacit.learning.evaluation import PolicyEstimate
    from tacit.server.offline_gate import OfflineGate

    control = PolicyEstimate("current", "ips", 0.04, 0.03, 0.05, 1000, "ok", 900.0)
    relative = Guardrail("conversion", 0.10, ToleranceKind.RELATIVE)  # 10% of 0.04 = 0.004
    absolute = Guardrail("dwell_time", 0.002, ToleranceKind.ABSOLUTE)
    assert OfflineGate._tolerance(_draft((relative,)), control) == pytest.approx(0.004)
    assert OfflineGate._tolerance(_draft((relative, absolute)), control) == pytest.approx(0.002)
    assert OfflineGate._tolerance(_draft(()), control) == 0.0


def test_a_control_that_cannot_be_evaluated_offline_is_not_judged(tmp_path: Any) -> None:
    from tacit.server.config import SlotSettings
    from tacit.server.offline_gate import OfflineGate
    from tacit.store.db import Database

    db = Database.open(f"sqlite:///{tmp_path / 'gate.db'}")
    try:
        verdict = OfflineGate(db, {"home": SlotSettings()}).check(_draft((), control_policy="model:v3"))
    finally:
        db.dispose()
    assert verdict.passed and not verdict.judged
    assert "control arm control cannot be evaluated offline" in verdict.summary


@pytest.mark.parametrize(
    ("slot", "message"),
    [
        ({"reward_min": 1.0, "reward_max": 1.0}, "reward_min must be below reward_max"),
        ({"reward_min": 0.0, "reward_max": 1.0, "default_reward": -1.0}, "default_reward must lie in"),
    ],
)
def test_a_bad_reward_range_stops_the_start_naming_the_slot(slot: dict[str, float], message: str) -> None:
    from tacit.server.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match=f"slots.home.*{message}"):
        load_settings(None, slots={"home": slot})
    assert load_settings(None, slots={"home": {"reward_max": 5.0}}).slots["home"].reward_range == (0.0, 5.0)
