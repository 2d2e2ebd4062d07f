"""EvaluatePolicies through a real server on a log the simulator knows the truth of.

The ContentSite simulator drives Rank and Reward (the slot's bandit logs its
propensities); for every visit it knows the expected click rate of a uniform
random choice, so the uniform policy's true value on the evaluated part of the
log is known exactly.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable

import grpc
import numpy as np
import pytest

from tacit.cli import main as tacit_main
from tacit.server.auth import Role
from tacit.sim.client import drive
from tacit.sim.world import ContentSite
from tacit.v1 import model_pb2, model_pb2_grpc

DECISIONS = 1_600


def test_evaluate_policies_brackets_the_uniform_truth(start_server: Callable[..., object]) -> None:
    handle = start_server(seed=11)  # type: ignore[assignment]
    trace = drive(handle.channel, handle.token(Role.SERVICE), ContentSite(n_candidates=8, seed=4), DECISIONS)
    stub = model_pb2_grpc.ModelServiceStub(handle.channel)
    experimenter = handle.metadata(Role.EXPERIMENTER)
    request = model_pb2.EvaluatePoliciesRequest(
        slot="home",
        policies=["uniform", "static:first", "current", "vw:--cb_explore_adf --epsilon 0.1"],
    )
    response = stub.EvaluatePolicies(request, metadata=experimenter)
    estimates = {(e.policy, e.estimator): e for e in response.estimates}
    assert set(estimates) == {
        (p, k)
        for p in ("uniform", "static:first", "current", "vw:--cb_explore_adf --epsilon 0.1")
        for k in ("ips", "snips", "doubly_robust")
    }
    for estimate in response.estimates:  # bounded by the slot's [0, 1] reward range
        assert estimate.status in ("ok", "insufficient"), estimate
        assert 0.0 <= estimate.ci_low < estimate.ci_high <= 1.0, estimate
        assert 0.0 <= estimate.value <= 1.0, estimate
        assert estimate.interval == ("betting" if estimate.estimator == "ips" else "empirical_bernstein")
        assert 0 < estimate.matched_rewards <= estimate.matched <= estimate.n
    assert estimates[("uniform", "ips")].matched == estimates[("uniform", "ips")].n  # uniform matches all
    evaluated = estimates[("uniform", "ips")].n
    assert evaluated == DECISIONS - DECISIONS // 2
    truth = float(np.mean(trace.random[-evaluated:]))
    for estimator in ("ips", "doubly_robust"):
        estimate = estimates[("uniform", estimator)]
        assert estimate.ci_low <= truth <= estimate.ci_high, (estimator, estimate, truth)
    # The learned policies should beat random on this site (the bandit learns fast here).
    assert estimates[("current", "doubly_robust")].value > estimates[("uniform", "doubly_robust")].value

    out = io.StringIO()
    real, sys.stdout = sys.stdout, out
    try:
        code = tacit_main(["evaluate", "--slot", "home", "--data-dir", str(handle.data_dir)])
    finally:
        sys.stdout = real
    assert code == 0
    assert "static:first" in out.getvalue() and "doubly_robust" in out.getvalue()
    print(out.getvalue())


@pytest.mark.parametrize(
    ("policies", "field"),
    [
        (["uniform", "greedy"], "policies[1]"),
        (["vw:--epsilon 0.1"], "policies[0]"),
        (["vw:--cb_explore_adf -f /tmp/x"], "policies[0]"),
    ],
)
def test_a_bad_policy_names_its_position(start_server, policies, field) -> None:  # type: ignore[no-untyped-def]
    handle = start_server()
    stub = model_pb2_grpc.ModelServiceStub(handle.channel)
    with pytest.raises(grpc.RpcError) as error:
        stub.EvaluatePolicies(
            model_pb2.EvaluatePoliciesRequest(slot="home", policies=policies),
            metadata=handle.metadata(Role.EXPERIMENTER),
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith(field)


def test_too_short_a_log_is_a_failed_precondition(start_server) -> None:  # type: ignore[no-untyped-def]
    handle = start_server()
    stub = model_pb2_grpc.ModelServiceStub(handle.channel)
    with pytest.raises(grpc.RpcError) as error:
        stub.EvaluatePolicies(
            model_pb2.EvaluatePoliciesRequest(slot="home"), metadata=handle.metadata(Role.EXPERIMENTER)
        )
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "home" in error.value.details()
