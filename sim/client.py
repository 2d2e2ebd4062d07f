"""Drives simulated visitors through the public gRPC API, like any other client."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import numpy as np

from tacit.sim.world import ContentSite, Visit
from tacit.v1 import common_pb2, decision_pb2, decision_pb2_grpc


def to_features(values: dict[str, str | float]) -> common_pb2.Features:
    features = common_pb2.Features()
    for name, value in values.items():
        if isinstance(value, str):
            features.values[name].string_value = value
        else:
            features.values[name].number_value = float(value)
    return features


@dataclass
class Trace:
    """What the simulator saw, visit by visit (expected click probabilities, not coin flips)."""

    chosen: list[float] = field(default_factory=list)
    optimal: list[float] = field(default_factory=list)
    random: list[float] = field(default_factory=list)
    clicks: list[int] = field(default_factory=list)

    def summary(self, last: int) -> dict[str, float]:
        chosen = float(np.mean(self.chosen[-last:]))
        optimal = float(np.mean(self.optimal[-last:]))
        random = float(np.mean(self.random[-last:]))
        return {
            "decisions": float(len(self.chosen)),
            "bandit_ctr": chosen,
            "optimal_ctr": optimal,
            "random_ctr": random,
            "observed_ctr": float(np.mean(self.clicks[-last:])),
            "vs_optimal": chosen / optimal,
            "vs_random": chosen / random,
            "progressive_ctr": float(np.mean(self.chosen)),
        }


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def rank_request(
    slot: str,
    visit_subject: str,
    context: dict[str, str | float],
    candidates: list[tuple[str, dict[str, str | float]]],
) -> decision_pb2.RankRequest:
    return decision_pb2.RankRequest(
        slot=slot,
        subject_id=visit_subject,
        context=to_features(context),
        candidates=[decision_pb2.Candidate(id=cid, features=to_features(feats)) for cid, feats in candidates],
    )


def visit_context(visit: Visit) -> dict[str, str | float]:
    """The context a site would send for a visit (the policy keeps device, daypart, hour)."""
    return {"device": visit.device, "daypart": str(visit.context["daypart"]), "hour": float(visit.hour)}


def visit_candidates(visit: Visit) -> list[tuple[str, dict[str, str | float]]]:
    return [(item.item_id, {"topic": item.topic, "length": item.length}) for item in visit.candidates]


def drive(
    channel: grpc.Channel,
    token: str,
    site: ContentSite,
    decisions: int,
    slot: str = "home",
    on_step: Callable[[int, Trace], None] | None = None,
) -> Trace:
    """Ranks `decisions` visits and sends each click (1) or no click (0) as the reward."""
    stub = decision_pb2_grpc.DecisionServiceStub(channel)
    metadata = bearer(token)
    trace = Trace()
    for step, visit in enumerate(site.visits(decisions)):
        request = rank_request(slot, visit.subject_id, visit_context(visit), visit_candidates(visit))
        response = stub.Rank(request, metadata=metadata)
        index = [item.item_id for item in visit.candidates].index(response.chosen_id)
        probability = visit.click_probabilities[index]
        clicked = site.click(probability)
        stub.Reward(
            decision_pb2.RewardRequest(event_id=response.event_id, value=1.0 if clicked else 0.0),
            metadata=metadata,
        )
        trace.chosen.append(probability)
        trace.optimal.append(visit.optimal_probability)
        trace.random.append(visit.random_probability)
        trace.clicks.append(int(clicked))
        if on_step is not None:
            on_step(step, trace)
    return trace
