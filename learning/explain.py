"""What a slot's VW model weighs, read from the model itself.

VW's ``--invert_hash`` names every weight an example touched (linear terms and the
interactions the model's ``-q``/``--interactions`` generate) with the feature names the
example was written with. Tacit writes only declared field names and the stored, already
anonymized tokens into its examples (`bandit.build_example`), so the names that come back
hold nothing else. A term's contribution to one (decision, candidate) row is ``weight ×
value``; VW predicts cost (= -reward), so the reward contribution is its negative.
"""

from __future__ import annotations

import re
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

import vowpalwabbit

from tacit.learning.bandit import (
    ACTION_NAMESPACE,
    SHARED_NAMESPACE,
    Features,
    FeatureValue,
    action_line,
    build_example,
    feature_terms,
    validate_arguments,
)

CONSTANT = "Constant"
# One line of an --invert_hash file: name[offset]:hash:weight (offset with --bag, --cover ...).
_TERM_LINE = re.compile(r"^(?P<name>[^:]+?)(?:\[(?P<offset>\d+)\])?:(?P<hash>\d+):(?P<weight>\S+)$")
# Splits an interaction at "*" followed by one of Tacit's namespaces.
_PART = re.compile(rf"\*(?=[{SHARED_NAMESPACE}{ACTION_NAMESPACE}]\^)")


@dataclass(frozen=True)
class Row:
    """One decision's context and candidates, as they were logged (anonymized)."""

    context: Features
    actions: Sequence[Features]
    chosen_index: int = 0


@dataclass(frozen=True)
class Importance:
    """A term or a group of terms and its mean absolute reward contribution per row."""

    name: str
    importance: float
    weight: float
    occurrences: int


@dataclass(frozen=True)
class ModelExplanation:
    rows: int
    namespaces: tuple[Importance, ...]
    features: tuple[Importance, ...]
    interactions: tuple[Importance, ...]
    terms: tuple[Importance, ...]


@dataclass(frozen=True)
class Contribution:
    name: str
    value: float
    weight: float
    contribution: float


@dataclass(frozen=True)
class DecisionExplanation:
    predicted_reward: float
    contributions: tuple[Contribution, ...]


def read_weights(vw_args: str, model_path: Path, examples: Iterable[Row]) -> dict[str, float]:
    """Each named term's weight in the model at ``model_path`` (averaged over offsets), for the
    terms ``examples`` touch. Loads a test-only copy: the model is never changed."""
    validate_arguments(vw_args)
    with tempfile.TemporaryDirectory(prefix="tacit-explain-") as directory:
        inverted = Path(directory) / "inverted.txt"
        workspace = vowpalwabbit.Workspace(f"{vw_args} --quiet -t -i {model_path} --invert_hash {inverted}")
        try:
            for example in _naming_examples(examples):
                workspace.predict(example)
        finally:
            workspace.finish()
        return _parse_inverted(inverted.read_text(encoding="utf-8", errors="replace"))


def _naming_examples(rows: Iterable[Row]) -> list[list[str]]:
    """One example per distinct context with every distinct candidate seen with it: VW names the
    same terms as it would for the decisions one by one, in far fewer lines when contexts repeat."""
    by_context: dict[str, dict[str, None]] = {}
    for row in rows:
        shared = build_example(row.context, [])[0]
        seen = by_context.setdefault(shared, {})
        for action in row.actions:
            seen.setdefault(action_line(action))
    return [[shared, *actions] for shared, actions in by_context.items()]


def _parse_inverted(text: str) -> dict[str, float]:
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for line in text.splitlines():
        match = _TERM_LINE.match(line.strip())
        if match is None or match["name"][:1].isdigit():
            continue  # header lines, and weights no example of the sample named
        try:
            weight = float(match["weight"])
        except ValueError:
            continue
        sums[match["name"]] += weight
        counts[match["name"]] += 1
    return {name: sums[name] / counts[name] for name in sums}


def _row_terms(row: Row, action_index: int) -> dict[str, float]:
    """The linear terms of one (decision, candidate) row: "U^name[=token]" -> value."""
    return _pair_terms(tuple(row.context.items()), tuple(row.actions[action_index].items()))


def _pair_terms(
    context: tuple[tuple[str, FeatureValue], ...], action: tuple[tuple[str, FeatureValue], ...]
) -> dict[str, float]:
    return {
        CONSTANT: 1.0,
        **_cached_terms(SHARED_NAMESPACE, context),
        **_cached_terms(ACTION_NAMESPACE, action),
    }


@lru_cache(maxsize=65_536)
def _cached_terms(namespace: str, items: tuple[tuple[str, FeatureValue], ...]) -> Mapping[str, float]:
    # Contexts and candidates repeat across a sample; their terms are worked out once.
    return MappingProxyType(feature_terms(namespace, dict(items)))


class _TermIndex:
    """The model's named terms by their first part, so a row visits only the terms it can hold."""

    def __init__(self, weights: Mapping[str, float]):
        self.weights = weights
        self._by_first: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)
        for name in weights:
            parts = _PART.split(name)
            self._by_first[parts[0]].append((name, parts[1:]))

    def present(self, linear: Mapping[str, float]) -> Iterable[tuple[str, float, float]]:
        """(term, value, weight) of every named term the row holds; an interaction's value is the
        product of its parts'."""
        for first, first_value in linear.items():
            for name, rest in self._by_first.get(first, ()):
                value = first_value
                for part in rest:
                    if part not in linear:
                        break
                    value *= linear[part]
                else:
                    yield name, value, self.weights[name]


def _group(name: str) -> tuple[str, str]:
    """(feature group, namespace group) of a term: tokens dropped, then feature names dropped."""
    if name == CONSTANT:
        return CONSTANT, CONSTANT
    parts = _PART.split(name)
    features = "*".join(part.split("=", 1)[0] for part in parts)
    namespaces = "*".join(part.split("^", 1)[0] for part in parts)
    return features, namespaces


def _ranked(items: Iterable[Importance], top_n: int) -> tuple[Importance, ...]:
    return tuple(sorted(items, key=lambda item: (-item.importance, item.name))[:top_n])


def explain_model(vw_args: str, model_path: Path, rows: Sequence[Row], top_n: int = 20) -> ModelExplanation:
    """Ranks the model's terms, features, interactions and namespaces by mean |contribution| per row."""
    weights = read_weights(vw_args, model_path, rows)
    index = _TermIndex(weights)
    totals: dict[str, float] = defaultdict(float)
    occurrences: dict[str, int] = defaultdict(int)
    # Identical (context, candidate) rows hold identical terms: each distinct one is worked out once.
    distinct = Counter(
        (tuple(row.context.items()), tuple(action.items())) for row in rows for action in row.actions
    )
    for (context, action), count in distinct.items():
        for name, value, weight in index.present(_pair_terms(context, action)):
            totals[name] += abs(weight * value) * count
            occurrences[name] += count
    row_count = sum(distinct.values())
    per_row = max(row_count, 1)
    terms = [Importance(n, totals[n] / per_row, weights[n], occurrences[n]) for n in totals]
    features: dict[str, list[Importance]] = defaultdict(list)
    namespaces: dict[str, list[Importance]] = defaultdict(list)
    for term in terms:
        feature, namespace = _group(term.name)
        features[feature].append(term)
        namespaces[namespace].append(term)

    def grouped(groups: Mapping[str, list[Importance]], interactions: bool | None) -> list[Importance]:
        return [
            Importance(name, sum(t.importance for t in members), 0.0, sum(t.occurrences for t in members))
            for name, members in groups.items()
            if interactions is None or ("*" in name) == interactions
        ]

    return ModelExplanation(
        rows=row_count,
        namespaces=_ranked(grouped(namespaces, None), top_n),
        features=_ranked(grouped(features, False), top_n),
        interactions=_ranked(grouped(features, True), top_n),
        terms=_ranked(terms, top_n),
    )


def explain_decision(vw_args: str, model_path: Path, row: Row, top_n: int = 10) -> DecisionExplanation:
    """The terms behind the chosen candidate's predicted reward, largest |contribution| first."""
    weights = read_weights(vw_args, model_path, [row])
    contributions = [
        Contribution(name, value, weight, -weight * value)
        for name, value, weight in _TermIndex(weights).present(_row_terms(row, row.chosen_index))
    ]
    predicted = sum(c.contribution for c in contributions)
    ranked = sorted(contributions, key=lambda c: (-abs(c.contribution), c.name))[:top_n]
    return DecisionExplanation(predicted, tuple(ranked))
