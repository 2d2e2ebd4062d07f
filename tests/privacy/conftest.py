"""Fixtures for the privacy tests: one analyzer per session, a key ring, a boundary."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import spacy

from tacit.privacy.analyzer import AnalyzerSettings, TacitAnalyzer, build_analyzer
from tacit.privacy.boundary import BoundaryLimits, PrivacyBoundary
from tacit.privacy.policy import default_policy_set
from tacit.privacy.pseudonym import KeyRing

FIXED_NOW = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
NER_NAMES = ["Marguerite Okonkwo", "Tobias Lindqvist"]
NER_CITIES = ["Reykjavik", "Timbuktu"]


@pytest.fixture(scope="session")
def analyzer() -> TacitAnalyzer:
    return build_analyzer(AnalyzerSettings())


@pytest.fixture(scope="session")
def ner_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny spaCy pipeline on disk whose entity_ruler knows a few names and cities."""
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(
        [{"label": "PERSON", "pattern": name} for name in NER_NAMES]
        + [{"label": "GPE", "pattern": city} for city in NER_CITIES]
        + [{"label": "ORG", "pattern": "Acme Corp"}]
    )
    path = tmp_path_factory.mktemp("ner") / "tiny_ner"
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="session")
def ner_analyzer(ner_model_path: Path) -> TacitAnalyzer:
    return build_analyzer(AnalyzerSettings(ner_model=str(ner_model_path)))


@pytest.fixture
def keyring(tmp_path: Path) -> KeyRing:
    return KeyRing.load_or_create(tmp_path / "keys.json")


@pytest.fixture
def boundary(analyzer: TacitAnalyzer, keyring: KeyRing) -> Iterator[PrivacyBoundary]:
    yield PrivacyBoundary(
        default_policy_set(), keyring, analyzer, BoundaryLimits(), clock=lambda: FIXED_NOW
    )
