"""Through the real server: an experimenter defines "bounce rate" with MetricService, starts an
experiment with it as the primary metric (lower is better), and the server's own periodic
evaluation ships a treatment that lowers it and rolls back one that raises it.

Two slots run one experiment each on distinct visitors. On every visit the site ranks two
items and then reports page views: a visit to the "sticky" item is a single page view (a
bounce) with probability 0.2, to the "dull" item with probability 0.7. `static:first` always
shows the first candidate, `uniform` each one half of the time, so the true bounce rates are
0.2 or 0.7 (static:first) against 0.45 (uniform).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tacit.server.auth import Role
from tacit.v1 import (
    decision_pb2,
    decision_pb2_grpc,
    event_pb2,
    event_pb2_grpc,
    experiment_pb2,
    experiment_pb2_grpc,
    metric_pb2,
    metric_pb2_grpc,
)
from tests.conftest import ServerHandle

BOUNCE = {"sticky": 0.2, "dull": 0.7}
RUNNING = experiment_pb2.EXPERIMENT_STATE_RUNNING


class BounceSite:
    """Visitors of one slot: Rank, then 1 page view (a bounce) or 2–4 page views."""

    def __init__(self, handle: ServerHandle, slot: str, order: tuple[str, str], seed: int) -> None:
        self.slot = slot
        self.order = order
        self.rank = decision_pb2_grpc.DecisionServiceStub(handle.channel)
        self.events = event_pb2_grpc.EventServiceStub(handle.channel)
        self.metadata = handle.metadata(Role.SERVICE)
        self.rng = np.random.default_rng(seed)
        self.visitors = 0

    def _visit(self, subject: str) -> str:
        response = self.rank.Rank(
            decision_pb2.RankRequest(
                slot=self.slot,
                subject_id=subject,
                candidates=[decision_pb2.Candidate(id=c) for c in self.order],
            ),
            metadata=self.metadata,
        )
        return response.chosen_id

    def run(self, visits: int) -> None:
        subjects = [f"{self.slot}-visitor-{self.visitors + i}" for i in range(visits)]
        self.visitors += visits
        with ThreadPoolExecutor(max_workers=8) as pool:
            shown = list(pool.map(self._visit, subjects))
        views = []
        for subject, item in zip(subjects, shown, strict=True):
            pages = 1 if self.rng.random() < BOUNCE[item] else int(self.rng.integers(2, 5))
            views += [
                event_pb2.Event(event_id=f"pv-{uuid.uuid4().hex}", subject_id=subject, event_type="page_view")
                for _ in range(pages)
            ]
        for start in range(0, len(views), 400):
            self.events.TrackEvents(
                event_pb2.TrackEventsRequest(events=views[start : start + 400]), metadata=self.metadata
            )


def _experiment(experiment_id: str, slot: str) -> experiment_pb2.CreateExperimentRequest:
    return experiment_pb2.CreateExperimentRequest(
        experiment_id=experiment_id,
        experiment=experiment_pb2.Experiment(
            slot=slot,
            arms=[
                experiment_pb2.Arm(name="control", policy="uniform", weight=0.5),
                experiment_pb2.Arm(name="treatment", policy="static:first", weight=0.5),
            ],
            primary_metric="site_bounce_rate",
            stages=[
                experiment_pb2.Stage(percent=50, min_sample=80),
                experiment_pb2.Stage(percent=100, min_sample=160),
            ],
            auto_advance=True,
        ),
    )


def test_lower_bounce_rate_ships_and_higher_is_rolled_back(start_server: Callable[..., ServerHandle]) -> None:
    handle = start_server(
        slots={"home": {"reward_window_seconds": 0.2}, "side": {"reward_window_seconds": 0.2}},
        learner={"enabled": False},
        # The server's own rule engine, off the serving threads, on a configured cadence.
        experiments={
            "evaluation_interval_seconds": 0.5,
            "refresh_seconds": 0.05,
            "sequential_tuning_n": 1000,
        },
    )
    md = handle.metadata(Role.EXPERIMENTER)
    metrics = metric_pb2_grpc.MetricServiceStub(handle.channel)
    defined = metrics.CreateMetric(
        metric_pb2.CreateMetricRequest(
            metric=metric_pb2.Metric(
                name="site_bounce_rate",
                value=metric_pb2.MetricSide(
                    event_types=["page_view"], aggregation=metric_pb2.METRIC_AGGREGATION_SINGLE
                ),
                denominator=metric_pb2.MetricSide(
                    event_types=["page_view"], aggregation=metric_pb2.METRIC_AGGREGATION_ANY
                ),
                window_seconds=600,
                direction=metric_pb2.METRIC_DIRECTION_LOWER_IS_BETTER,
                description="visits with a single page view",
            )
        ),
        metadata=md,
    )
    assert defined.version == 1 and not defined.builtin
    stub = experiment_pb2_grpc.ExperimentServiceStub(handle.channel)
    for experiment_id, slot in (("lowers", "home"), ("raises", "side")):
        stub.CreateExperiment(_experiment(experiment_id, slot), metadata=md)
        stub.StartExperiment(
            experiment_pb2.ExperimentActionRequest(name=f"experiments/{experiment_id}"), metadata=md
        )
    sites = {
        "lowers": BounceSite(handle, "home", ("sticky", "dull"), seed=21),
        "raises": BounceSite(handle, "side", ("dull", "sticky"), seed=22),
    }
    states = {"lowers": RUNNING, "raises": RUNNING}
    for _ in range(40):
        for experiment_id, site in sites.items():
            if states[experiment_id] == RUNNING:
                site.run(100)
        time.sleep(1.2)  # at least two evaluation periods of the server's own evaluator
        for experiment_id in sites:
            states[experiment_id] = stub.GetExperiment(
                experiment_pb2.GetExperimentRequest(name=f"experiments/{experiment_id}"), metadata=md
            ).state
        if RUNNING not in states.values():
            break
    reports = {
        experiment_id: stub.GetExperimentReport(
            experiment_pb2.GetExperimentReportRequest(name=f"experiments/{experiment_id}"), metadata=md
        )
        for experiment_id in sites
    }
    assert states["lowers"] == experiment_pb2.EXPERIMENT_STATE_SHIPPED, reports["lowers"].summary
    assert states["raises"] == experiment_pb2.EXPERIMENT_STATE_ROLLED_BACK, reports["raises"].summary

    for experiment_id, (treatment_rate, sign) in {"lowers": (0.2, -1), "raises": (0.7, 1)}.items():
        history = stub.ListExperimentChanges(
            experiment_pb2.ListExperimentChangesRequest(name=f"experiments/{experiment_id}", page_size=100),
            metadata=md,
        ).changes
        final = history[-1]
        assert final.actor == "system" and final.action == ("ship" if sign < 0 else "rollback")
        primary = next(m for m in final.report.metrics if m.role == "primary")
        assert primary.metric == "site_bounce_rate"
        # The numbers behind the decision: bounce rates near the truth, a lift of the right sign.
        assert abs(primary.treatment_mean - treatment_rate) < 0.12
        assert abs(primary.control_mean - 0.45) < 0.12
        # The always-valid band excludes 0 on the side of the lift.
        nearest_zero = primary.always_valid_ci_high if sign < 0 else primary.always_valid_ci_low
        assert sign * primary.absolute_lift > 0 and sign * nearest_zero > 0
