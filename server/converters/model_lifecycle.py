"""ModelService explanation and lifecycle messages <-> domain objects."""

from __future__ import annotations

from collections.abc import Iterable

from tacit.learning.explain import Importance
from tacit.server.converters.model import finite_or
from tacit.server.model_lifecycle import ExplainedDecision, ExplainedModel
from tacit.v1 import model_pb2


def _importances(items: Iterable[Importance]) -> list[model_pb2.ExplainImportance]:
    return [
        model_pb2.ExplainImportance(
            name=item.name,
            importance=finite_or(item.importance),
            weight=finite_or(item.weight),
            occurrences=item.occurrences,
        )
        for item in items
    ]


def explain_model_message(explained: ExplainedModel) -> model_pb2.ExplainModelResponse:
    explanation = explained.explanation
    return model_pb2.ExplainModelResponse(
        slot=explained.slot,
        model_version=explained.model_version,
        sample_decisions=explained.decisions,
        sample_rows=explanation.rows,
        namespaces=_importances(explanation.namespaces),
        features=_importances(explanation.features),
        interactions=_importances(explanation.interactions),
        terms=_importances(explanation.terms),
    )


def explain_decision_message(explained: ExplainedDecision) -> model_pb2.ExplainDecisionResponse:
    explanation = explained.explanation
    return model_pb2.ExplainDecisionResponse(
        slot=explained.slot,
        decision_model_version=explained.decision_model_version,
        model_version=explained.model_version,
        chosen_index=explained.chosen_index,
        chosen_probability=finite_or(explained.chosen_probability),
        candidates=explained.candidates,
        predicted_reward=finite_or(explanation.predicted_reward),
        contributions=[
            model_pb2.ExplainContribution(
                name=c.name,
                value=finite_or(c.value),
                weight=finite_or(c.weight),
                contribution=finite_or(c.contribution),
            )
            for c in explanation.contributions
        ],
    )
