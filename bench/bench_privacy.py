"""Anonymization throughput of the privacy boundary against bare Presidio, in one run.

    .venv/bin/python bench/bench_privacy.py [--events 3000] [--texts 600]

(a) structured events, no free text: the boundary's `event.page_view` policy
    (keep, generalize ip/user agent/timestamp, pseudonymize session id);
    bare Presidio analyzes + anonymizes every string value of the same events.
(b) events with a 200-character free-text field (Faker text with planted
    e-mails, phones, cards, IBANs, SSNs, IPs) plus the structured fields of (a);
    bare Presidio analyzes + anonymizes the same 200-character texts.
(c) what normalize-then-analyze adds, on the same inputs: normalization (NFKC,
    invisibles, digits), decoding (percent/HTML/escapes) and the encoded-token
    scan per string value, and the disguised-PII recognizer per free text.

Bare Presidio = `AnalyzerEngine` with Presidio's own predefined recognizers
and the same offline spaCy pipeline (no model download is possible here), and
`AnonymizerEngine().anonymize` with its default replace operator. Goals:
(a) >= 3,000 events/s, (b) boundary cost within 1.25x bare Presidio.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import tldextract
from faker import Faker
from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.recognizer_registry import RecognizerRegistry
from presidio_anonymizer import AnonymizerEngine

from tacit.privacy.analyzer import (
    LANGUAGE,
    OFFLINE_TLD_EXTRACT,
    AnalyzerSettings,
    LanguageNlpEngine,
    blank_english,
    build_analyzer,
    ner_configuration,
)
from tacit.privacy.boundary import BoundaryLimits, PrivacyBoundary
from tacit.privacy.normalize import decode_layers, encoded_tokens, normalize_text
from tacit.privacy.policy import Action, default_policy_set
from tacit.privacy.pseudonym import KeyRing
from tacit.privacy.recognizers import DisguisedPiiRecognizer

UAS = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.0 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
]


def structured_events(fake: Faker, n: int) -> list[dict[str, Any]]:
    start = datetime(2024, 5, 1, tzinfo=UTC)
    return [
        {
            "device": random.choice(["mobile", "desktop", "tablet"]),
            "country": random.choice(["US", "DE", "FR", "GB"]),
            "language": random.choice(["en", "de", "fr"]),
            "page_type": random.choice(["home", "product", "checkout"]),
            "ip": fake.ipv4_public() if i % 2 else fake.ipv6(),
            "user_agent": random.choice(UAS),
            "timestamp": (start + timedelta(seconds=i * 37)).isoformat(),
            "session_id": fake.uuid4(),
            "dwell_ms": random.randint(100, 90_000),
            "scroll_depth": random.random(),
        }
        for i in range(n)
    ]


def free_texts(fake: Faker, n: int) -> list[str]:
    planted = [fake.email, fake.phone_number, fake.credit_card_number, fake.iban, fake.ssn, fake.ipv4]
    texts = []
    for i in range(n):
        pii = planted[i % len(planted)]()
        text = f"{fake.sentence(nb_words=8)} contact {pii} {fake.sentence(nb_words=14)}"
        text = (text + " " + fake.text(max_nb_chars=200))[:200]
        texts.append(text.ljust(200, "."))
    return texts


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bare_presidio() -> tuple[AnalyzerEngine, AnonymizerEngine]:
    # Presidio's e-mail recognizer calls tldextract.extract, which would try to download the
    # public-suffix list on every miss here (no network): point it at the same offline snapshot
    # the boundary uses, so the comparison measures recognition, not failed downloads.
    tldextract.extract = OFFLINE_TLD_EXTRACT  # type: ignore[assignment]
    registry = RecognizerRegistry(supported_languages=[LANGUAGE])
    registry.load_predefined_recognizers(languages=[LANGUAGE])
    engine = AnalyzerEngine(
        registry=registry,
        nlp_engine=LanguageNlpEngine(blank_english(), ner_configuration()),
        supported_languages=[LANGUAGE],
    )
    return engine, AnonymizerEngine()


def run_bare(analyzer: AnalyzerEngine, anonymizer: AnonymizerEngine, texts: Sequence[str]) -> None:
    for text in texts:
        results = analyzer.analyze(text, language=LANGUAGE)
        anonymizer.anonymize(text, results)  # type: ignore[arg-type]


def normalize_and_decode(strings: Sequence[str]) -> None:
    for value in strings:
        text = decode_layers(normalize_text(value))
        encoded_tokens(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=3_000, help="structured events for (a)")
    parser.add_argument("--texts", type=int, default=600, help="free-text events for (b)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N rounds")
    parser.add_argument("--bare-events", type=int, default=300, help="(a) events bare Presidio runs on")
    args = parser.parse_args(argv)
    random.seed(7)
    fake = Faker("en_US")
    fake.seed_instance(7)

    keyring = KeyRing.load_or_create(Path(tempfile.mkdtemp()) / "keys.json")
    boundary = PrivacyBoundary(
        default_policy_set(), keyring, build_analyzer(AnalyzerSettings()), BoundaryLimits()
    )
    analyzer, anonymizer = bare_presidio()

    events = structured_events(fake, args.events)
    texts = free_texts(fake, args.texts)
    text_events = [{**events[i % len(events)], "text": text} for i, text in enumerate(texts)]
    bare_events = events[: args.bare_events]  # bare Presidio is slow on (a); a subset gives its rate
    structured_strings = [v for e in bare_events for v in e.values() if isinstance(v, str)]

    # warm-up: spaCy vocab, regex caches, the user-agent parser
    for e in events[:50]:
        boundary.anonymize("event.page_view", e, "warm")
    for e in text_events[:20]:
        boundary.anonymize("event.custom", e, "warm")
    run_bare(analyzer, anonymizer, texts[:20] + structured_strings[:50])

    def best(fn: Callable[[], None]) -> float:
        return min(timed(fn) for _ in range(args.repeat))

    a_boundary = best(lambda: [boundary.anonymize("event.page_view", e, "bench") for e in events] and None)
    a_bare = best(lambda: run_bare(analyzer, anonymizer, structured_strings))
    b_boundary = best(lambda: [boundary.anonymize("event.custom", e, "bench") for e in text_events] and None)
    b_bare = best(lambda: run_bare(analyzer, anonymizer, texts))

    # What the boundary runs on structured events: normalization on every string, decoding and
    # the token scan only where it analyzes (keep and scrub fields; generalizers parse theirs).
    page_view = boundary.policies.get("event.page_view").fields
    all_strings = [v for e in events for v in e.values() if isinstance(v, str)]
    analyzed = [v for e in events for k, v in e.items()
                if isinstance(v, str) and page_view[k].action in (Action.KEEP, Action.SCRUB)]
    c_events = best(lambda: [normalize_text(v) for v in all_strings] and normalize_and_decode(analyzed))
    c_texts = best(lambda: normalize_and_decode(texts))
    disguised = DisguisedPiiRecognizer()
    c_recognizer = best(lambda: [disguised.analyze(t, []) for t in texts] and None)

    n_a, n_b, n_bare = len(events), len(text_events), len(bare_events)
    print(f"(a) structured events, {n_a} events x {len(events[0])} fields, no free text")
    print(f"    boundary            {n_a / a_boundary:10.0f} events/s   "
          f"({a_boundary / n_a * 1e6:8.1f} us/event)")
    print(f"    bare Presidio       {n_bare / a_bare:10.0f} events/s   "
          f"({a_bare / n_bare * 1e6:8.1f} us/event, "
          f"analyze+anonymize of {len(structured_strings) // n_bare} string values each)")
    a_ratio = (a_boundary / n_a) / (a_bare / n_bare)
    print(f"    ratio boundary/bare cost {a_ratio:6.2f}x   goal: >= 3,000 events/s -> "
          f"{'MET' if n_a / a_boundary >= 3_000 else 'MISSED'}")
    print(f"(b) events with a 200-char free-text field, {n_b} events")
    print(f"    boundary            {n_b / b_boundary:10.0f} events/s   "
          f"({b_boundary / n_b * 1e6:8.1f} us/event)")
    print(f"    bare Presidio       {n_b / b_bare:10.0f} events/s   ({b_bare / n_b * 1e6:8.1f} us/event, "
          "analyze+anonymize of the text only)")
    ratio = b_boundary / b_bare
    verdict = "MET" if ratio <= 1.25 else "MISSED"
    print(f"    ratio boundary/bare cost {ratio:6.2f}x   goal: <= 1.25x -> {verdict}")
    print("(c) normalize-then-analyze, included in (a) and (b)")
    print(f"    (a) normalize+decode+token scan  {c_events / n_a * 1e6:8.1f} us/event "
          f"({c_events / a_boundary:5.1%} of the boundary's cost)")
    text_cost = (c_texts + c_recognizer) / n_b
    print(f"    (b) same on the text             {c_texts / n_b * 1e6:8.1f} us/event")
    print(f"        + disguised-PII recognizer   {c_recognizer / n_b * 1e6:8.1f} us/event "
          f"(together {text_cost / (b_bare / n_b):5.1%} of bare Presidio's cost)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
