"""ModelService protobuf <-> domain conversions: registry records, drift reports, page tokens."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from tacit.learning.evaluation import DriftSummary
from tacit.learning.registry import INSTALLED, PROMOTED, needs_retraining
from tacit.learning.registry_models import ModelRecord
from tacit.learning.retraining import RunRecord
from tacit.server.auto_optimize import RunRecord as AutoOptimizeRecord
from tacit.server.converters import to_timestamp
from tacit.server.errors import InvalidArgument
from tacit.v1 import model_pb2


def encode_page_token(after_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{after_id}".encode()).decode()


def decode_page_token(token: str, method: str = "ListModels") -> int | None:
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        if not text.startswith("id:"):
            raise ValueError
        return int(text[3:])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument("page_token", f"is not a token returned by {method}") from None


def model_message(record: ModelRecord) -> model_pb2.Model:
    return model_pb2.Model(
        name=record.name,
        task=record.task,
        version=record.version,
        active=record.active,
        metrics={k: float(v) for k, v in record.metrics.items() if math.isfinite(float(v))},
        create_time=to_timestamp(record.created_at),
        examples=record.examples,
        needs_retraining=needs_retraining(record.details),
        vw_args=str(record.details.get("vw_args", "")) if record.details else "",
        promoted_from=_promoted_from(record.details),
        **installed_fields(record.details),
    )


def installed_fields(details: Mapping[str, Any] | None) -> dict[str, str]:
    """Model.installed_by / source_version / source_sha256 of a version ImportModel or ResetModel
    installed (and of the later checkpoints that learned on from it)."""
    origin = (details or {}).get(INSTALLED)
    if not isinstance(origin, dict):
        return {}
    return {
        "installed_by": str(origin.get("action", "")),
        "source_version": str(origin.get("source_version", "")),
        "source_sha256": str(origin.get("source_sha256", "")),
    }


def _promoted_from(details: Mapping[str, Any] | None) -> str:
    origin = (details or {}).get(PROMOTED)
    if not isinstance(origin, dict):
        return ""
    return f"experiments/{origin.get('experiment_id', '')}/arms/{origin.get('arm', '')}"


def finite_or(value: float, default: float = 0.0) -> float:
    """A figure the wire can carry: NaN or infinity (nothing to compare) becomes `default`."""
    return value if math.isfinite(value) else default


def drift_message(summary: DriftSummary, reward_alpha: float) -> model_pb2.DriftReport:
    """The wire form of a drift summary; NaN figures (nothing to compare) become 0."""
    report = summary.report
    message = model_pb2.DriftReport(
        task=summary.task,
        features=[
            model_pb2.FeatureDrift(feature=name, psi=finite_or(psi))
            for name, psi in report.feature_psi.items()
        ],
        stale=report.stale,
        threshold=report.threshold,
        drifted_features=list(report.drifted_features),
        current_start_time=to_timestamp(summary.window_start),
        current_end_time=to_timestamp(summary.window_end),
        reference_count=report.n_reference,
        current_count=report.n_current,
        model_version=summary.version,
    )
    if report.prediction_psi is not None and math.isfinite(report.prediction_psi):
        message.prediction_psi = report.prediction_psi
    if summary.reference_start is not None:
        message.reference_start_time.CopyFrom(to_timestamp(summary.reference_start))
    if summary.reference_end is not None:
        message.reference_end_time.CopyFrom(to_timestamp(summary.reference_end))
    reward = report.reward
    if reward is not None:
        message.reward_rate_drift.CopyFrom(
            model_pb2.RewardRateDrift(
                reference_rate=finite_or(reward.reference_rate),
                current_rate=finite_or(reward.current_rate),
                reference_count=report.n_reference,
                current_count=report.n_current,
                z=finite_or(reward.z),
                p_value=finite_or(reward.p_value, 1.0),
                drifted=reward.significant,
                alpha=reward_alpha,
                status=reward.status.value,
            )
        )
    return message


def _step_time(text: str) -> Timestamp:
    return to_timestamp(datetime.fromisoformat(text))


def retraining_run_message(run: RunRecord) -> model_pb2.RetrainingRun:
    """The wire form of a retraining run; scores are left unset when the run did not validate."""
    message = model_pb2.RetrainingRun(
        id=run.id,
        task=run.task,
        start_time=to_timestamp(run.started_at),
        outcome=run.outcome,
        triggers=list(run.triggers),
        active_version=run.active_version or "",
        candidate_version=run.candidate_version or "",
        metric=run.metric,
        tolerance=run.tolerance,
        holdout_rows=run.holdout_rows,
        steps=[
            model_pb2.RetrainingStep(
                name=str(step.get("name", "")),
                time=_step_time(str(step["at"])),
                figures={k: float(v) for k, v in dict(step.get("figures", {})).items()},
                note=str(step.get("note", "")),
            )
            for step in run.steps
        ],
    )
    if run.finished_at is not None:
        message.end_time.CopyFrom(to_timestamp(run.finished_at))
    if run.active_score is not None and math.isfinite(run.active_score):
        message.active_score = run.active_score
    if run.candidate_score is not None and math.isfinite(run.candidate_score):
        message.candidate_score = run.candidate_score
    return message


def auto_optimize_run_message(run: AutoOptimizeRecord) -> model_pb2.AutoOptimizeRun:
    """The wire form of a stored auto-optimize run; missing figures (no interval) become 0."""
    message = model_pb2.AutoOptimizeRun(
        id=run.id, slot=run.slot, trigger=run.trigger, start_time=to_timestamp(run.started_at),
        outcome=run.outcome, current_args=run.current_args, best_args=run.best_args, margin=run.margin,
        decisions=run.decisions, experiment_id=run.experiment_id, note=run.note,
        candidates=[
            model_pb2.AutoOptimizeCandidate(
                vw_args=e["vw_args"], current=bool(e["current"]), estimator=e["estimator"],
                value=e["value"] or 0.0, ci_low=e["ci_low"] or 0.0, ci_high=e["ci_high"] or 0.0,
                n=e["n"], status=e["status"], effective_sample_size=e["effective_sample_size"] or 0.0,
                matched=e["matched"], matched_rewards=e["matched_rewards"],
            )
            for e in run.estimates
        ],
    )  # fmt: skip
    if run.finished_at is not None:
        message.end_time.CopyFrom(to_timestamp(run.finished_at))
    return message
