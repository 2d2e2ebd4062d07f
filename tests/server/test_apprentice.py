"""Apprentice mode through a real server on a real port (issue 13, part 1).

One simulated site drives three slots: `home` switches to online by itself once the learned
policy's OPE lower bound beats the baseline by the margin; `strict` has a margin no policy can
reach, so it stays in apprentice mode until a command switches it; `logging` has ε = 0.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from sqlalchemy import func, select

from tacit.cli.main import main
from tacit.server.auth import Role
from tacit.sim.client import drive, rank_request, visit_candidates, visit_context
from tacit.sim.world import ContentSite, Visit
from tacit.store.db import Database
from tacit.store.schema import Decision
from tacit.v1 import audit_pb2, audit_pb2_grpc, decision_pb2, decision_pb2_grpc, slot_pb2, slot_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_bad_input import field_violations  # noqa: E402

EPSILON = 0.04
MARGIN = 0.05


def _apprentice(margin: float | None, min_decisions: int, epsilon: float = EPSILON) -> dict:
    return {
        "mode": "apprentice",
        "apprentice": {
            "epsilon": epsilon,
            "switch_margin": margin,
            "min_decisions": min_decisions,
            "window": 2_000,
            "check_interval_seconds": 1.0,
        },
    }


SLOTS = {
    "home": _apprentice(MARGIN, 1_000),
    "strict": _apprentice(0.9, 200),  # rewards are clicks in [0, 1]: never reached
    "logging": _apprentice(None, 200, epsilon=0.0),
}


def first_candidate(visit: Visit) -> str:
    """The site's own rule (today's baseline): the first candidate it lists."""
    return visit.candidates[0].item_id


def _status(stub: slot_pb2_grpc.SlotServiceStub, slot: str, metadata) -> slot_pb2.GetSlotStatusResponse:  # type: ignore[no-untyped-def]
    return stub.GetSlotStatus(slot_pb2.GetSlotStatusRequest(slot=slot), metadata=metadata)


@pytest.mark.slow
def test_apprentice_serves_the_baseline_and_switches_only_when_the_bound_is_met(start_server) -> None:  # type: ignore[no-untyped-def]
    handle = start_server(seed=5, slots=SLOTS, experiments={"refresh_seconds": 0.5})
    slots = slot_pb2_grpc.SlotServiceStub(handle.channel)
    experimenter = handle.metadata(Role.EXPERIMENTER)
    site = ContentSite(n_candidates=10, seed=21)

    strict = drive(handle.channel, handle.token(), site, 400, slot="strict", baseline=first_candidate)
    apprentice_visits = []
    for _ in range(30):  # until the automatic switch (at most 7,500 visits)
        trace = drive(handle.channel, handle.token(), site, 250, slot="home", baseline=first_candidate)
        apprentice_visits += [
            served
            for served, mode in zip(trace.served_baseline, trace.modes, strict=True)
            if mode == slot_pb2.SLOT_MODE_APPRENTICE
        ]
        if trace.modes[-1] == slot_pb2.SLOT_MODE_ONLINE:
            break
    home = _status(slots, "home", experimenter)
    assert home.mode == slot_pb2.SLOT_MODE_ONLINE
    assert home.lift_lower_bound == pytest.approx(home.learned.ci_low - home.baseline.ci_high)

    # Served the baseline >= 95% while in apprentice mode (ε = 0.04: at least 96% expected).
    assert np.mean(apprentice_visits) >= 0.95
    assert np.mean(strict.served_baseline) >= 0.95
    # The switch was automatic, once, with numbers that meet the rule.
    changes = slots.ListSlotModeChanges(
        slot_pb2.ListSlotModeChangesRequest(slot="home"), metadata=experimenter
    )
    [change] = changes.changes
    assert (change.actor, change.from_mode, change.to_mode) == (
        "system",
        slot_pb2.SLOT_MODE_APPRENTICE,
        slot_pb2.SLOT_MODE_ONLINE,
    )
    assert change.decisions >= 1_000
    assert change.learned.ci_low >= change.baseline.ci_high + MARGIN
    # The other side: strict had its minimum of decisions when the same check pass ran, and stays.
    strict_status = _status(slots, "strict", experimenter)
    assert strict_status.mode == slot_pb2.SLOT_MODE_APPRENTICE
    assert strict_status.decisions >= 200 and not strict_status.switch_ready
    assert strict_status.learned.ci_low < strict_status.baseline.ci_high + 0.9
    assert not slots.ListSlotModeChanges(
        slot_pb2.ListSlotModeChangesRequest(slot="strict"), metadata=experimenter
    ).changes

    # The reported estimate (still on the apprentice decisions) covers what the policy now does online.
    online = drive(handle.channel, handle.token(), site, 500, slot="home", baseline=first_candidate)
    assert set(online.modes) == {slot_pb2.SLOT_MODE_ONLINE} and not any(online.served_baseline)
    online_value = float(np.mean(online.chosen))
    baseline_truth = float(np.mean([p for p in online.random]))  # the first candidate is a random one
    print(
        f"\nhome: {len(apprentice_visits)} visits in apprentice mode, the report read {change.decisions} at "
        f"the switch; agreement {home.agreement:.4f}, "
        f"baseline served {home.baseline_served:.4f}; learned {home.learned.value:.4f} "
        f"[{home.learned.ci_low:.4f}, {home.learned.ci_high:.4f}], baseline {home.baseline.value:.4f} "
        f"[{home.baseline.ci_low:.4f}, {home.baseline.ci_high:.4f}]; online afterwards {online_value:.4f} "
        f"(optimum {np.mean(online.optimal):.4f}, random {baseline_truth:.4f})"
    )
    assert home.learned.ci_low <= online_value <= home.learned.ci_high

    # Audited: one slot_mode record for the automatic switch.
    audit = audit_pb2_grpc.AuditServiceStub(handle.channel)
    records = audit.ListAuditRecords(
        audit_pb2.ListAuditRecordsRequest(payload_kind="slot_mode"), metadata=handle.metadata(Role.AUDITOR)
    ).records
    assert len(records) == 1 and '"automatic":1' in records[0].body_json.replace(" ", "")

    # On command: strict goes online (once), and Rank then serves the learned policy.
    command = slot_pb2.SetSlotModeRequest(slot="strict", mode=slot_pb2.SLOT_MODE_ONLINE, reason="reviewed")
    switched = slots.SetSlotMode(command, metadata=experimenter)
    assert (
        switched.changed and switched.change.actor == "experimenter" and switched.change.reason == "reviewed"
    )
    assert not slots.SetSlotMode(command, metadata=experimenter).changed
    after = drive(handle.channel, handle.token(), site, 5, slot="strict", baseline=first_candidate)
    assert set(after.modes) == {slot_pb2.SLOT_MODE_ONLINE}

    # Logging only (ε = 0): the baseline every time, logged with probability 1.
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    for visit in site.visits(20):
        request = rank_request("logging", visit.subject_id, visit_context(visit), visit_candidates(visit))
        request.baseline_id = visit.candidates[3].item_id
        response = stub.Rank(request, metadata=handle.metadata())
        assert response.chosen_id == request.baseline_id and response.served_baseline
        assert response.ranking[0].probability == 1.0


def _rank(visit: Visit, slot: str = "home", **changes: object) -> decision_pb2.RankRequest:
    request = rank_request(slot, visit.subject_id, visit_context(visit), visit_candidates(visit))
    for name, value in changes.items():
        if name == "excluded_ids":
            request.excluded_ids.extend(value)  # type: ignore[arg-type]
        else:
            setattr(request, name, value)
    return request


def test_apprentice_bad_input_is_refused_and_the_mode_survives_a_restart(
    database_url, start_server, tmp_path, capsys
) -> None:  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "apprentice"
    config = {"home": _apprentice(None, 200, epsilon=0.5), "logging": _apprentice(None, 200, epsilon=0.0)}
    handle = start_server(database_url, data_dir=data_dir, slots=config)
    decisions = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    slots = slot_pb2_grpc.SlotServiceStub(handle.channel)
    service, experimenter = handle.metadata(), handle.metadata(Role.EXPERIMENTER)
    visit = ContentSite(n_candidates=5, seed=3).visit()
    secret = "baseline-not-offered-4711"
    cases = [
        (_rank(visit, baseline_id=secret), "baseline_id"),
        (_rank(visit, baseline_id="has space"), "baseline_id"),
        (
            _rank(visit, baseline_id=visit.candidates[1].item_id, excluded_ids=[visit.candidates[1].item_id]),
            "baseline_id",
        ),
    ]
    for request, field in cases:
        with pytest.raises(grpc.RpcError) as caught:
            decisions.Rank(request, metadata=service)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(caught.value) == [field]
        assert secret not in (caught.value.details() or "")

    # A retry answers the original decision with its mode; ranking probabilities are the mixture.
    request = _rank(visit, baseline_id=visit.candidates[2].item_id, request_id="retry-apprentice-1")
    first = decisions.Rank(request, metadata=service)
    again = decisions.Rank(request, metadata=service)
    assert first.slot_mode == again.slot_mode == slot_pb2.SLOT_MODE_APPRENTICE
    assert (first.chosen_id, first.served_baseline) == (again.chosen_id, again.served_baseline)
    assert first.served_baseline == (first.chosen_id == visit.candidates[2].item_id)
    baseline_probability = {c.id: c.probability for c in first.ranking}[visit.candidates[2].item_id]
    assert baseline_probability >= 0.5  # 1 - ε at least
    assert sum(c.probability for c in first.ranking) == pytest.approx(1.0)
    # The report reads decisions whose reward is final only.
    status = slots.GetSlotStatus(slot_pb2.GetSlotStatusRequest(slot="home"), metadata=experimenter)
    assert status.decisions == 0 and status.learned.status == "empty_log"
    decisions.Reward(decision_pb2.RewardRequest(event_id=first.event_id, value=1.0), metadata=service)
    status = slots.GetSlotStatus(slot_pb2.GetSlotStatusRequest(slot="home"), metadata=experimenter)
    assert status.decisions == 1 and status.baseline_served == float(first.served_baseline)
    assert status.learned.status == "too_few_decisions" and math.isnan(status.lift_lower_bound)
    # Without baseline_id the baseline is the first eligible candidate (logging only: always it).
    logged = decisions.Rank(
        _rank(visit, "logging", excluded_ids=[visit.candidates[0].item_id]), metadata=service
    )
    assert logged.chosen_id == visit.candidates[1].item_id and logged.served_baseline
    assert logged.ranking[0].probability == 1.0

    bad_slot_calls = [
        (slots.GetSlotStatus, slot_pb2.GetSlotStatusRequest(slot="nowhere"), grpc.StatusCode.NOT_FOUND),
        (
            slots.GetSlotStatus,
            slot_pb2.GetSlotStatusRequest(slot="Bad Slot"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (slots.SetSlotMode, slot_pb2.SetSlotModeRequest(slot="home"), grpc.StatusCode.INVALID_ARGUMENT),
        (
            slots.SetSlotMode,
            slot_pb2.SetSlotModeRequest(slot="home", mode=slot_pb2.SLOT_MODE_ONLINE, reason="x" * 1_001),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            slots.ListSlotModeChanges,
            slot_pb2.ListSlotModeChangesRequest(slot="home", page_token="forged"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]
    for call, message, code in bad_slot_calls:
        with pytest.raises(grpc.RpcError) as caught:
            call(message, metadata=experimenter)
        assert caught.value.code() == code
        if call == slots.SetSlotMode:
            assert field_violations(caught.value) in (["mode"], ["reason"])
    with pytest.raises(grpc.RpcError) as caught:
        slots.GetSlotStatus(slot_pb2.GetSlotStatusRequest(slot="home"), metadata=service)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    status = slots.GetSlotStatus(slot_pb2.GetSlotStatusRequest(slot="home"), metadata=experimenter)
    assert status.mode == slot_pb2.SLOT_MODE_APPRENTICE and not status.has_switch_margin
    assert "switch_margin unset" in status.switch_reason

    # A command (here from the CLI) is committed before OK and survives a restart.
    cli = ["slot", "--target", handle.target, "--data-dir", str(data_dir)]
    assert main([*cli, "status", "home"]) == 0
    assert json.loads(capsys.readouterr().out)["mode"] == "SLOT_MODE_APPRENTICE"
    assert main([*cli, "set-mode", "home", "online", "--reason", "baseline retired"]) == 0
    change = json.loads(capsys.readouterr().out)["change"]
    assert (change["actor"], change["to_mode"], change["reason"]) == (
        "experimenter",
        "SLOT_MODE_ONLINE",
        "baseline retired",
    )
    assert main([*cli, "status", "nowhere"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    handle.running.stop(grace=1)
    restarted = start_server(database_url, data_dir=data_dir, slots=config)
    response = decision_pb2_grpc.DecisionServiceStub(restarted.channel).Rank(_rank(visit), metadata=service)
    assert response.slot_mode == slot_pb2.SLOT_MODE_ONLINE and not response.served_baseline
    history = slot_pb2_grpc.SlotServiceStub(restarted.channel).ListSlotModeChanges(
        slot_pb2.ListSlotModeChangesRequest(slot="home", page_size=1), metadata=experimenter
    )
    assert [c.to_mode for c in history.changes] == [slot_pb2.SLOT_MODE_ONLINE] and history.next_page_token
    # Back to apprentice: the history pages newest first; every change is in the audit chain.
    back = slot_pb2.SetSlotModeRequest(slot="home", mode=slot_pb2.SLOT_MODE_APPRENTICE)
    assert slot_pb2_grpc.SlotServiceStub(restarted.channel).SetSlotMode(back, metadata=experimenter).changed
    pages, token = [], ""
    for _ in range(3):
        page = slot_pb2_grpc.SlotServiceStub(restarted.channel).ListSlotModeChanges(
            slot_pb2.ListSlotModeChangesRequest(slot="home", page_size=1, page_token=token),
            metadata=experimenter,
        )
        pages += [c.to_mode for c in page.changes]
        token = page.next_page_token
    assert pages == [slot_pb2.SLOT_MODE_APPRENTICE, slot_pb2.SLOT_MODE_ONLINE]
    records = (
        audit_pb2_grpc.AuditServiceStub(restarted.channel)
        .ListAuditRecords(
            audit_pb2.ListAuditRecordsRequest(payload_kind="slot_mode"),
            metadata=handle.metadata(Role.AUDITOR),
        )
        .records
    )
    assert len(records) == 2
    db = Database.open(restarted.settings.database_url)
    try:
        with db.transaction() as session:
            stored = session.execute(
                select(func.count()).where(Decision.apprentice.is_not(None))
            ).scalar_one()
    finally:
        db.dispose()
    assert (
        stored == 2
    )  # the retried decision (once) and the logging one; online ones carry no apprentice data
