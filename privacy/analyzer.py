"""A Presidio analyzer that starts offline, built once per process.

The default pipeline is ``spacy.blank("en")`` plus a lookup lemmatizer from
spacy-lookups-data: no model download, and Presidio's context words still
raise scores. Names and places need an NER model (``ner_model``: a spaCy
package name or a path); without one, PERSON/LOCATION are not detected.
Nothing here ever downloads: the NLP engine never calls ``spacy.cli.download``
and e-mail validation uses tldextract's bundled public-suffix snapshot.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import regex
import spacy
from presidio_analyzer import (
    AnalyzerEngine,
    EntityRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    CryptoRecognizer,
    DateRecognizer,
    EmailRecognizer,
    MacAddressRecognizer,
    MedicalLicenseRecognizer,
    NhsRecognizer,
    PhoneRecognizer,
    SpacyRecognizer,
    UkNinoRecognizer,
    UrlRecognizer,
    UsItinRecognizer,
    UsPassportRecognizer,
    UsSsnRecognizer,
)
from presidio_analyzer.recognizer_registry import RecognizerRegistry
from spacy.language import Language

from tacit.privacy.recognizers import OFFLINE_TLD_EXTRACT as OFFLINE_TLD_EXTRACT
from tacit.privacy.recognizers import DisguisedPiiRecognizer, StreetAddressRecognizer
from tacit.privacy.recognizers import RegexTimeoutError as RegexTimeoutError

logger = logging.getLogger("tacit.privacy")

LANGUAGE = "en"
NER_ENTITIES = ("PERSON", "LOCATION")


# Our own identifiers: results lying entirely inside one of these are not PII.
OWN_ID_RE = re.compile(
    r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"  # UUID
    r"|\bevt_[A-Za-z0-9]{8,64}\b"  # event ids
    r"|\bps1:[A-Za-z0-9_-]{1,32}:[a-z2-7]{52}\b",  # our pseudonyms
    re.IGNORECASE,
)

# Presidio's card regex misses 2-series Mastercard and 19-digit cards; this one
# is validated by the same Luhn check, so random digit runs mostly fall away.
# Digit-only boundaries: a card glued to letters ("x4929…", a literal "\n4929…") is found too.
ANY_CARD_PATTERN = Pattern(
    "Any Luhn card (12-19 digits)", r"(?<![\d-])(?:\d[ .-]?){11,18}\d(?!\d)", 0.3
)
# phonenumbers rejects well-shaped numbers it cannot place (unassigned area
# codes); these shapes catch them anyway, fail closed.
PHONE_SHAPES = [
    Pattern(
        "NANP-shaped phone",
        r"(?<![\d-])(?:\+?\d{1,3}[\s.-]?)?(?:\(\d{3}\)|\d{3})[\s.-]?\d{3}[\s.-]?\d{4}"
        r"(?:\s*(?:x|ext\.?)\s*\d{1,6})?(?![\d-])",
        0.4,
    ),
    Pattern("International phone", r"(?<![\d+])\+\d{1,3}[\s.-]?(?:\d[\s.-]?){6,12}\d(?!\d)", 0.4),
]


class AnalyzerConfigError(ValueError):
    """The analyzer cannot be built from the given settings."""


@dataclass(frozen=True)
class AnalyzerSettings:
    """How to build the process-wide analyzer."""

    ner_model: str | None = None
    score_threshold: float = 0.3
    max_text_chars: int = 2_000
    entities: list[str] | None = None
    regex_timeout_seconds: float = 0.5
    extra_own_id_patterns: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold <= 1.0:
            raise AnalyzerConfigError("score_threshold must be within [0, 1]")
        if self.max_text_chars <= 0:
            raise AnalyzerConfigError("max_text_chars must be positive")
        if self.regex_timeout_seconds <= 0:
            raise AnalyzerConfigError("regex_timeout_seconds must be positive")


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's e-mail recognizer validated against the bundled suffix list.

    Only the domain is validated: Presidio passes the whole match, whose local
    part may hold '/' (as in a URL path) and then fails validation (fail open).
    """

    def validate_result(self, pattern_text: str) -> bool:
        domain = pattern_text.rsplit("@", 1)[-1]
        if OFFLINE_TLD_EXTRACT(domain).fqdn != "":
            return True
        # Glued after the address ("jane@example.comthanks", "…org5551234567"): the last
        # label starts with a known suffix. The whole match is replaced, glue and all.
        head, _, last = domain.rpartition(".")
        return bool(head) and any(
            OFFLINE_TLD_EXTRACT(f"{head}.{last[:cut]}").fqdn != ""
            for cut in range(min(len(last), 24), 1, -1)
        )


class _TimeoutGuardedRegex:
    """Wraps a compiled ``regex`` pattern: our time-out, and a time-out raises.

    Presidio catches ``TimeoutError`` and silently skips the pattern (fail
    open); re-raising as ``RegexTimeoutError`` lets the boundary drop the field.
    """

    def __init__(self, compiled: Any, timeout: float) -> None:
        self._compiled = compiled
        self._timeout = timeout

    def finditer(self, text: str, *args: Any, **kwargs: Any) -> Iterator[Any]:
        kwargs["timeout"] = self._timeout
        try:
            yield from self._compiled.finditer(text, *args, **kwargs)
        except TimeoutError:
            raise RegexTimeoutError("recognizer regex timed out") from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._compiled, name)


def _guard_pattern_recognizer(recognizer: PatternRecognizer, timeout: float) -> None:
    # Presidio shares Pattern objects between instances (class-level PATTERNS):
    # copy them so one analyzer's time-out never leaks into another's.
    flags = recognizer.global_regex_flags
    guarded = []
    for original in list(recognizer.patterns):  # type: ignore[has-type]
        pattern = Pattern(original.name, original.regex, original.score)
        compiled = regex.compile(pattern.regex, flags=flags)
        pattern.compiled_regex = _TimeoutGuardedRegex(compiled, timeout)  # type: ignore[assignment]
        pattern.compiled_with_flags = flags  # type: ignore[assignment]
        guarded.append(pattern)
    recognizer.patterns = guarded  # type: ignore[has-type]


class LanguageNlpEngine(SpacyNlpEngine):
    """A Presidio spaCy engine around a ready ``Language``: never loads or downloads."""

    def __init__(self, nlp: Language, ner_model_configuration: NerModelConfiguration) -> None:
        super().__init__(
            models=[{"lang_code": LANGUAGE, "model_name": "<in-memory>"}],
            ner_model_configuration=ner_model_configuration,
        )
        self.nlp = {LANGUAGE: nlp}  # type: ignore[assignment]

    def load(self) -> None:
        """Already loaded; kept so a stray ``load()`` cannot trigger a download."""


def blank_english() -> Language:
    """``spacy.blank("en")`` with a lookup lemmatizer; no model download needed."""
    nlp = spacy.blank(LANGUAGE)
    _add_lookup_lemmatizer(nlp)
    return nlp


def _add_lookup_lemmatizer(nlp: Language) -> None:
    nlp.add_pipe("lemmatizer", config={"mode": "lookup"})
    lemmatizer = nlp.get_pipe("lemmatizer")
    lemmatizer.initialize()  # type: ignore[attr-defined]  # tables come from spacy-lookups-data, on disk


def load_ner_pipeline(ner_model: str) -> Language:
    """Load an installed spaCy package or a pipeline directory; never download."""
    is_path = Path(ner_model).exists()
    if not (is_path or spacy.util.is_package(ner_model)):
        raise AnalyzerConfigError(
            f"NER model {ner_model!r} is neither an installed spaCy package nor a directory; "
            "install it (it is never downloaded at run time) or set ner_model to none"
        )
    try:
        nlp = spacy.load(ner_model, exclude=["parser", "senter", "textcat", "textcat_multilabel"])
    except (OSError, ValueError) as exc:
        raise AnalyzerConfigError(f"cannot load NER model {ner_model!r}: {exc}") from exc
    if "ner" not in nlp.pipe_names and "entity_ruler" not in nlp.pipe_names:
        logger.warning("NER model has no ner or entity_ruler component; names won't be found")
    if "lemmatizer" not in nlp.pipe_names:
        _add_lookup_lemmatizer(nlp)
    return nlp


def ner_configuration() -> NerModelConfiguration:
    """Map spaCy labels to PERSON/LOCATION and ignore every other NER label."""
    mapping = {"PERSON": "PERSON", "PER": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION",
               "LOCATION": "LOCATION"}
    ignore = ["ORG", "ORGANIZATION", "NORP", "NRP", "DATE", "TIME", "CARDINAL", "ORDINAL",
              "QUANTITY", "MONEY", "PERCENT", "FAC", "PRODUCT", "EVENT", "WORK_OF_ART",
              "LAW", "LANGUAGE", "MISC"]
    return NerModelConfiguration(model_to_presidio_entity_mapping=mapping,
                                 labels_to_ignore=ignore)


def predefined_recognizers() -> list[EntityRecognizer]:
    """Regex and checksum recognizers that fit English-language product traffic.

    Left out on purpose: ``UuidRecognizer`` (UUIDs are our own ids),
    ``UsBankRecognizer``/``UsLicenseRecognizer`` (score ~0.01-0.05 on any
    8-17 digit run; they only add noise at our threshold), ``IbanRecognizer`` and
    ``IpRecognizer`` (word boundaries, upper case only for IBANs: ``DisguisedPiiRecognizer``
    finds every IBAN and IP address).
    """
    return [
        CreditCardRecognizer(
            patterns=[*CreditCardRecognizer.PATTERNS, ANY_CARD_PATTERN],
            replacement_pairs=[("-", ""), (" ", ""), (".", "")],
        ),
        CryptoRecognizer(),
        DateRecognizer(),
        OfflineEmailRecognizer(),
        MacAddressRecognizer(),
        MedicalLicenseRecognizer(),
        NhsRecognizer(),
        PhoneRecognizer(),
        StreetAddressRecognizer(),  # US street/city lines: Presidio has none for English
        DisguisedPiiRecognizer(),  # glued, any-case and spelled-out forms the others miss
        PatternRecognizer(
            supported_entity="PHONE_NUMBER", name="PhoneShapeRecognizer", patterns=PHONE_SHAPES,
            context=["phone", "call", "tel", "mobile", "cell", "number"],
        ),
        UkNinoRecognizer(),
        UrlRecognizer(),
        UsItinRecognizer(),
        UsPassportRecognizer(),
        UsSsnRecognizer(),
    ]


class TacitAnalyzer(AnalyzerEngine):
    """``AnalyzerEngine`` that ignores our own ids and can skip the NLP pipeline."""

    def __init__(self, settings: AnalyzerSettings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        patterns = [OWN_ID_RE.pattern, *settings.extra_own_id_patterns]
        self._own_id_re = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
        self.has_ner = settings.ner_model is not None

    def analyze(  # type: ignore[override]
        self, text: str, language: str = LANGUAGE, **kwargs: Any
    ) -> list[RecognizerResult]:
        kwargs.setdefault("entities", self.settings.entities)
        kwargs.setdefault("score_threshold", self.settings.score_threshold)
        results = super().analyze(text, language, **kwargs)
        return self._without_own_ids(text, results)

    def analyze_patterns(self, text: str) -> list[RecognizerResult]:
        """Regex/checksum recognizers only, tokenizer-only artifacts: no spaCy pipes."""
        nlp = self.nlp_engine.get_nlp(LANGUAGE)  # type: ignore[attr-defined]
        doc = nlp.make_doc(text)
        artifacts = NlpArtifacts(
            entities=[], tokens=doc, tokens_indices=[t.idx for t in doc],
            lemmas=[t.lower_ for t in doc], nlp_engine=self.nlp_engine, language=LANGUAGE,
            scores=[],
        )
        return self.analyze(text, LANGUAGE, nlp_artifacts=artifacts)

    def _without_own_ids(
        self, text: str, results: list[RecognizerResult]
    ) -> list[RecognizerResult]:
        if not results:
            return results
        spans = [m.span() for m in self._own_id_re.finditer(text)]
        if not spans:
            return results
        return [
            r for r in results if not any(s <= r.start and r.end <= e for s, e in spans)
        ]


def build_analyzer(settings: AnalyzerSettings) -> TacitAnalyzer:
    """Build the process-wide analyzer; raises ``AnalyzerConfigError`` on bad settings."""
    nlp = load_ner_pipeline(settings.ner_model) if settings.ner_model else blank_english()
    engine = LanguageNlpEngine(nlp, ner_configuration())
    recognizers = predefined_recognizers()
    if settings.ner_model:
        recognizers.append(SpacyRecognizer(supported_entities=list(NER_ENTITIES)))
    for recognizer in recognizers:
        if isinstance(recognizer, PatternRecognizer):
            _guard_pattern_recognizer(recognizer, settings.regex_timeout_seconds)

    registry = RecognizerRegistry(recognizers=recognizers, supported_languages=[LANGUAGE])
    analyzer = TacitAnalyzer(
        settings,
        registry=registry,
        nlp_engine=engine,
        supported_languages=[LANGUAGE],
        default_score_threshold=settings.score_threshold,
    )
    if settings.entities:
        supported = set(analyzer.get_supported_entities(LANGUAGE))
        unknown = sorted(set(settings.entities) - supported)
        if unknown:
            raise AnalyzerConfigError(f"unsupported entities: {unknown}")
    logger.info(
        "built analyzer",
        extra={"ner": bool(settings.ner_model), "recognizers": len(recognizers)},
    )
    return analyzer
