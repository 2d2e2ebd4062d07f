"""The analyzer starts offline, finds pattern PII, ignores our own ids, and uses NER if given."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest
import spacy.cli

from tacit.privacy.analyzer import (
    AnalyzerConfigError,
    AnalyzerSettings,
    TacitAnalyzer,
    build_analyzer,
)
from tacit.privacy.pseudonym import KeyRing

NER_NAMES = ["Marguerite Okonkwo", "Tobias Lindqvist"]
NER_CITIES = ["Reykjavik", "Timbuktu"]


def _entities(analyzer: TacitAnalyzer, text: str) -> set[str]:
    return {r.entity_type for r in analyzer.analyze(text)}


def test_build_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network or download attempted")

    monkeypatch.setattr(spacy.cli, "download", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    analyzer = build_analyzer(AnalyzerSettings())
    found = _entities(analyzer, "mail jane.roe@example.co.uk or see https://example.org/x")
    assert {"EMAIL_ADDRESS", "URL"} <= found


def test_missing_ner_model_fails_clearly_without_download(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("download attempted")

    monkeypatch.setattr(spacy.cli, "download", refuse)
    with pytest.raises(AnalyzerConfigError, match="never downloaded"):
        build_analyzer(AnalyzerSettings(ner_model="en_core_web_nonexistent"))


def test_unknown_entities_setting_is_rejected() -> None:
    with pytest.raises(AnalyzerConfigError, match="unsupported entities"):
        build_analyzer(AnalyzerSettings(entities=["EMAIL_ADDRESS", "SHOE_SIZE"]))


def test_context_words_raise_scores_through_lemmas(analyzer: TacitAnalyzer) -> None:
    nlp = analyzer.nlp_engine.get_nlp("en")
    assert [t.lemma_ for t in nlp("phones ringing")] == ["phone", "ring"]


@pytest.mark.parametrize("own_id", [
    str(uuid.UUID("12345678-1234-5678-1234-567812345678")),
    "evt_01HZX3K8Q9ABCDEF0123",
])
def test_own_ids_are_not_personal_data(analyzer: TacitAnalyzer, own_id: str) -> None:
    assert analyzer.analyze(own_id) == []
    assert analyzer.analyze(f"event {own_id} was ranked") == []


def test_random_uuids_and_pseudonyms_are_not_flagged(analyzer: TacitAnalyzer) -> None:
    ring = KeyRing(keys={"k1": b"\x07" * 32}, active_key_id="k1")
    for i in range(200):
        value = str(uuid.uuid4())
        assert analyzer.analyze(f"id={value}") == [], value
        pseudonym = ring.pseudonymize(f"user-{i}")
        assert analyzer.analyze(pseudonym) == [], pseudonym


def test_own_id_filter_does_not_hide_pii_next_to_an_id(analyzer: TacitAnalyzer) -> None:
    text = f"{uuid.uuid4()} bob@example.com"
    assert "EMAIL_ADDRESS" in _entities(analyzer, text)


def test_names_need_an_ner_model(analyzer: TacitAnalyzer, ner_analyzer: TacitAnalyzer) -> None:
    text = f"{NER_NAMES[0]} flew to {NER_CITIES[0]} with Tobias Lindqvist; Acme Corp paid."
    assert not {"PERSON", "LOCATION"} & _entities(analyzer, text)
    found = ner_analyzer.analyze(text)
    spans = {(r.entity_type, text[r.start:r.end]) for r in found}
    assert ("PERSON", NER_NAMES[0]) in spans
    assert ("PERSON", NER_NAMES[1]) in spans
    assert ("LOCATION", NER_CITIES[0]) in spans
    assert "ORGANIZATION" not in {r.entity_type for r in found}


def test_ner_pipeline_from_disk_gets_a_lemmatizer(ner_model_path: Path) -> None:
    analyzer = build_analyzer(AnalyzerSettings(ner_model=str(ner_model_path)))
    assert "lemmatizer" in analyzer.nlp_engine.get_nlp("en").pipe_names
