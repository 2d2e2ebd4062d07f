"""The street-address recognizer: Faker addresses are found, ids, numbers and prose are not."""

from __future__ import annotations

import time
import uuid
from urllib.parse import parse_qs, quote_plus, urlsplit

import pytest
from faker import Faker
from faker.providers.address.en_US import Provider as UsAddressProvider

from tacit.privacy.analyzer import TacitAnalyzer
from tacit.privacy.boundary import PrivacyBoundary
from tacit.privacy.pseudonym import KeyRing
from tacit.privacy.recognizers import (
    STREET_ADDRESS,
    US_STATE_CODES,
    USPS_STREET_SUFFIXES,
    StreetAddressRecognizer,
)

SEEDS = (0, 7, 42, 1234, 20240501)
SAMPLES = 200
MIN_DETECTION_RATE = 0.95
SENTENCES = (
    "Please send it to {} by Friday.",
    "new address: {}",
    "{}",
    "Meet me at {}, then we go for lunch.",
    "The parcel went to {} yesterday and came back.",
)


def _address_spans(analyzer: TacitAnalyzer, text: str) -> list[tuple[int, int]]:
    return [(r.start, r.end) for r in analyzer.analyze(text) if r.entity_type == STREET_ADDRESS]


def _covered(analyzer: TacitAnalyzer, text: str, value: str) -> bool:
    """Every non-blank line of ``value`` inside ``text`` lies within a street-address span."""
    start = text.index(value)
    spans = _address_spans(analyzer, text)
    offset = start
    for line in value.split("\n"):
        line_start, line_end = offset, offset + len(line)
        offset = line_end + 1
        if line.strip() and not any(s <= line_start and line_end <= e for s, e in spans):
            return False
    return True


def _rate(analyzer: TacitAnalyzer, values: list[str]) -> tuple[float, list[str]]:
    misses = []
    for n, value in enumerate(values):
        text = SENTENCES[n % len(SENTENCES)].format(value)
        if not _covered(analyzer, text, value):
            misses.append(text)
    return 1 - len(misses) / len(values), misses


# -- data ------------------------------------------------------------------------------------


def test_suffix_and_state_data_cover_fakers_en_us_provider() -> None:
    ours = {word for pair in USPS_STREET_SUFFIXES for word in pair}
    assert set(UsAddressProvider.street_suffixes) <= ours
    assert set(UsAddressProvider.states_abbr) <= set(US_STATE_CODES)


def test_recognizer_is_registered(analyzer: TacitAnalyzer) -> None:
    assert STREET_ADDRESS in analyzer.get_supported_entities("en")
    names = {r.name for r in analyzer.registry.recognizers}
    assert StreetAddressRecognizer().name in names


# -- positives -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_faker_street_addresses_are_detected(analyzer: TacitAnalyzer, seed: int) -> None:
    fake = Faker("en_US")
    fake.seed_instance(seed)
    rate, misses = _rate(analyzer, [fake.street_address() for _ in range(SAMPLES)])
    assert rate >= MIN_DETECTION_RATE, misses[:10]


@pytest.mark.parametrize("seed", SEEDS)
def test_faker_full_addresses_are_detected_line_by_line(analyzer: TacitAnalyzer, seed: int) -> None:
    fake = Faker("en_US")
    fake.seed_instance(seed)
    rate, misses = _rate(analyzer, [fake.address() for _ in range(SAMPLES)])
    assert rate >= MIN_DETECTION_RATE, misses[:10]


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("Ship to 141 Hodges Mountains.", "141 Hodges Mountains"),
        ("17066 Heather Grove Apt. 915", "17066 Heather Grove Apt. 915"),
        ("office: 0681 Crystal Stream Suite 158, 3rd floor", "0681 Crystal Stream Suite 158"),
        ("1600 Pennsylvania Avenue NW, Washington, DC 20500", "1600 Pennsylvania Avenue NW"),
        ("1600 Pennsylvania Avenue NW, Washington, DC 20500", "Washington, DC 20500"),
        ("take the bus to 400 W 42nd St. and wait", "400 W 42nd St."),
        ("apt at 55 W. 5th Ave #12 is free", "55 W. 5th Ave #12"),
        ("12B Baker Blvd, Unit 4B", "12B Baker Blvd, Unit 4B"),
        ("77 MAIN STREET", "77 MAIN STREET"),
        ("Jane Roe,12 Oak St,Springfield", "12 Oak St"),
        ("Springfield, IL 62704-1234", "Springfield, IL 62704-1234"),
        ("New York NY 10001", "New York NY 10001"),
        ("PSC 0439, Box 7651\nAPO AP 12345", "PSC 0439, Box 7651"),
        ("PSC 0439, Box 7651\nAPO AP 12345", "APO AP 12345"),
        ("Unit 1234 Box 5678\nDPO AE 12345", "Unit 1234 Box 5678"),
        ("USNS Stewart\nFPO AE 31520", "USNS Stewart"),
        # lower case counts only next to a context word
        ("please ship to 12 oak st asap", "12 oak st"),
        ("my address is 9 elm street apt 3", "9 elm street apt 3"),
        ("she lives at 450 north park ave", "450 north park ave"),
    ],
)
def test_table_positives(analyzer: TacitAnalyzer, text: str, address: str) -> None:
    start = text.index(address)
    spans = _address_spans(analyzer, text)
    assert any(s <= start and start + len(address) <= e for s, e in spans), (text, spans)


def test_context_word_raises_the_score(analyzer: TacitAnalyzer) -> None:
    plain = [r for r in analyzer.analyze("seen near 141 Hodges Mountains") if r.entity_type == STREET_ADDRESS]
    shipped = [r for r in analyzer.analyze("ship to 141 Hodges Mountains") if r.entity_type == STREET_ADDRESS]
    assert plain and shipped and shipped[0].score > plain[0].score


def test_pattern_scan_of_keep_fields_finds_addresses(analyzer: TacitAnalyzer) -> None:
    found = analyzer.analyze_patterns("17066 Heather Grove Apt. 915")
    assert [r.entity_type for r in found] == [STREET_ADDRESS]


def test_boundary_redacts_addresses_in_text_and_url_query_values(boundary: PrivacyBoundary) -> None:
    fake = Faker("en_US")
    fake.seed_instance(99)
    for _ in range(20):
        street = fake.street_address()
        url = f"https://shop.example.com/orders?ship_to={quote_plus(street)}&utm_source=mail"
        out = boundary.anonymize(
            "event.custom", {"text": f"Hi! Ship to {street}. Thanks", "url": url}, "c1"
        )
        assert out.fields["text"] == "Hi! Ship to <STREET_ADDRESS>. Thanks"
        query = parse_qs(urlsplit(str(out.fields["url"])).query)
        assert query == {"ship_to": ["<STREET_ADDRESS>"], "utm_source": ["mail"]}
        counts = {f.field: f.entity_counts for f in out.audit.fields}
        assert counts["text"] == {STREET_ADDRESS: 1} and counts["url"] == {STREET_ADDRESS: 1}


# -- negatives -------------------------------------------------------------------------------


NEGATIVES = [
    "I walked 5 blocks down the main road",
    "I live 2 blocks from the park",
    "I live 2 hours each way",
    "we live 10 minutes up the road",
    "12 items",
    "12 items in your cart, 3 more to go",
    "Total: $12 Park Avenue special",
    "price 12.99 Main Street deal",
    "Buy 2 Get 1 Free",
    "Top 10 Travel Tips For Summer",
    "Windows 10 Pro on a Pixel 8 Pro",
    "Chapter 3 The Road Home",
    "meeting at 10:30 Park Lane lobby",
    "order item-3 Park Lane",
    "see /docs/12 Oak Street",
    "12 oak st",  # lower case without a context word
    "ship 12 boxes the fastest way",
    "version 2.3.4 released on 2024-05-01",
    "call me in 5 minutes",
    "the answer is 42",
    "1234567890",
    "Room 12 Main Hall",
    "Contact Us, IN case of trouble",
    "page 3 of 12",
    "USS Enterprise is a starship",  # a ship name alone, no FPO line
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_ordinary_text_is_not_an_address(analyzer: TacitAnalyzer, text: str) -> None:
    assert _address_spans(analyzer, text) == [], text


def test_own_ids_and_plain_numbers_are_not_addresses(analyzer: TacitAnalyzer) -> None:
    ring = KeyRing(keys={"k1": b"\x07" * 32}, active_key_id="k1")
    for i in range(100):
        own_ids = [
            str(uuid.uuid4()),
            f"evt_{uuid.uuid4().hex[:20]}",
            ring.pseudonymize(f"user-{i}"),
            f"item-{i}-{i % 3}",
            f"rq-{i}-ok",
        ]
        for own_id in own_ids:  # even right before a street name
            assert _address_spans(analyzer, f"id {own_id} Oak Street ranked") == [], own_id
        for number in (str(i * 7919), f"{i} {i + 1} {i + 2}", f"{i}.{i}", f"${i}"):
            assert _address_spans(analyzer, f"total {number} for {i} items") == [], number


# -- linear time -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bait",
    [
        "1 " + "A " * 999,
        "1 Aa" * 500,
        "12 " + "Main " * 399,
        "1" * 2000,
        "1 a b c " * 250,
        "A, " * 666,
        "Aaaa Bbbb Cccc Dddd " * 100,
        "1 " + "St " * 666,
        ("12 Oak " * 300)[:2000],
        "12 Oak St Apt " * 140,
        "Abc " * 499 + "TX 1234",
    ],
)
def test_regex_bait_is_cheap(analyzer: TacitAnalyzer, bait: str) -> None:
    recognizer = StreetAddressRecognizer()
    started = time.perf_counter()
    recognizer.analyze(bait[:2000], [STREET_ADDRESS])
    analyzer.analyze_patterns(bait[:2000])  # the guarded patterns: a time-out would raise
    assert time.perf_counter() - started < 0.5
