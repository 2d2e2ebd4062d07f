"""The leak test: plant realistic personal data everywhere a client can put it, then search every byte.

Faker-generated names, e-mails, phones, cards, IBANs, IPv4/IPv6 addresses,
SSNs and street addresses go into Rank contexts (free text, URLs, structured,
undeclared and dropped fields), candidate features, TrackEvents properties,
subject ids and Reward request ids, through the real gRPC API. After a learner
checkpoint and a clean stop, every file under the data dir (database, WAL and
SHM journals, model files, keys.json and tokens.json too: nothing is
excluded), the audit export, captured logs and every gRPC error message are
searched for each value in its common encodings.

Checksum- and pattern-detectable types must have zero hits; street addresses
are among them (``StreetAddressRecognizer``, no NER needed), searched both
whole and without their "Apt./Suite" unit. Names and cities are counted and
reported with the NER model off and on (the NER model is a tiny on-disk spaCy
pipeline whose entity_ruler knows the planted names and cities, loaded through
the ``privacy.ner_model`` setting).
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

import grpc
import pytest
import spacy
from faker import Faker
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import create_engine, text

from tacit.server.auth import Role
from tacit.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    common_pb2,
    decision_pb2,
    decision_pb2_grpc,
    event_pb2,
    event_pb2_grpc,
)

PATTERN_TYPES = ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IPV4", "IPV6", "SSN", "STREET_ADDRESS")
COUNTED_TYPES = ("NAME", "CITY")
PEOPLE = 6


@dataclass(frozen=True)
class Person:
    name: str
    email: str
    phone: str
    card: str
    iban: str
    ipv4: str
    ipv6: str
    ssn: str
    street: str
    city: str
    username: str


def _people() -> list[Person]:
    fake = Faker("en_US")
    fake.seed_instance(20240501)
    people = []
    while len(people) < PEOPLE:
        name = fake.name()
        if any(s in name for s in ("DDS", "DVM", "MD", "PhD", "Jr.", "II")):
            continue
        people.append(
            Person(
                name=name,
                email=fake.unique.email(),
                phone=fake.phone_number(),
                card=fake.credit_card_number(),
                iban=fake.iban(),
                ipv4=fake.ipv4_public(),
                ipv6=fake.ipv6(),
                ssn=fake.ssn(),
                street=fake.street_address(),
                city=fake.city(),
                username=fake.unique.user_name(),
            )
        )
    return people


PEOPLE_DATA = _people()


def _digits(value: str) -> str:
    return re.sub(r"\D", "", value)


def _national_phone(phone: str) -> str:
    return _digits(phone.split("x")[0])[-10:]


def _street_line(street: str) -> str:
    """The street without its unit: "17066 Heather Grove Apt. 915" -> "17066 Heather Grove"."""
    return re.sub(r" (?:Apt\.|Suite) \d+$", "", street)


def _grouped(value: str, size: int = 4) -> str:
    return " ".join(value[i : i + size] for i in range(0, len(value), size))


def needles(person: Person) -> dict[str, set[str]]:
    """Every encoding of every planted value that must not (or is counted if it does) appear."""
    ip6 = ipaddress.ip_address(person.ipv6)
    out = {
        "EMAIL": {person.email, quote(person.email, safe=""), quote_plus(person.email)},
        "PHONE": {person.phone, _digits(person.phone), _national_phone(person.phone)},
        "CREDIT_CARD": {person.card, _grouped(person.card)},
        "IBAN": {person.iban, _grouped(person.iban)},
        "IPV4": {person.ipv4},
        "IPV6": {person.ipv6, ip6.compressed, ip6.exploded},
        "SSN": {person.ssn, _digits(person.ssn)},
        "NAME": {person.name, quote_plus(person.name), quote(person.name)},
        "STREET_ADDRESS": {
            person.street, quote_plus(person.street),
            _street_line(person.street), quote_plus(_street_line(person.street)),
        },
        "CITY": {person.city},
    }
    return {kind: {n.lower() for n in values if n} for kind, values in out.items()}


def subject_ids(person: Person) -> list[str]:
    return [person.email, person.ssn, f"user:{person.username}", person.phone]


# -- NER model that knows the planted names and cities ------------------------------------


@pytest.fixture(scope="module")
def leak_ner_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(  # type: ignore[attr-defined]
        [{"label": "PERSON", "pattern": p.name} for p in PEOPLE_DATA]
        + [{"label": "GPE", "pattern": p.city} for p in PEOPLE_DATA]
    )
    path = tmp_path_factory.mktemp("leak_ner") / "pipeline"
    nlp.to_disk(path)
    return path


# -- traffic -------------------------------------------------------------------------------


def _features(values: dict[str, str | float | bool]) -> common_pb2.Features:
    features = common_pb2.Features()
    for key, value in values.items():
        if isinstance(value, bool):
            features.values[key].bool_value = value
        elif isinstance(value, str):
            features.values[key].string_value = value
        else:
            features.values[key].number_value = float(value)
    return features


def _free_text(p: Person) -> str:
    return (
        f"Hi, this is {p.name} from {p.city}. Ship to {p.street}. Mail {p.email} or call "
        f"{p.phone}; card {_grouped(p.card)}, IBAN {_grouped(p.iban)}, SSN {p.ssn}, "
        f"seen from {p.ipv4} and {p.ipv6}."
    )


def _url(p: Person) -> str:
    return (
        f"https://shop.example.com/u/{quote(p.email)}/orders?email={quote_plus(p.email)}"
        f"&ship_to={quote_plus(p.street)}&who={quote_plus(p.name)}&note=call+{quote_plus(p.phone)}"
        f"&iban={p.iban}&card={p.card}&from={p.ipv4}&utm_source=mail#ssn-{p.ssn}"
    )


def _rank_request(p: Person, subject: str, index: int) -> decision_pb2.RankRequest:
    context = {
        "search_query": f"gift for {p.name}, {p.email}, {p.phone}",
        "referrer": _url(p),
        "ip": p.ipv4 if index % 2 == 0 else p.ipv6,
        "device": p.card,  # a keep field holding a card: the pattern scan must catch it
        "page_type": p.email,  # keep field holding an e-mail
        "region": p.ssn,  # keep field holding an SSN
        "email": p.email,  # declared drop
        "name": p.name,  # declared drop
        "phone": p.phone,  # declared drop
        "customer_iban": p.iban,  # undeclared
        "home_address": p.street,  # undeclared
        "hour": 13,
        "is_returning": True,
    }
    candidates = [
        decision_pb2.Candidate(
            id=f"item-{index}-{c}",
            features=_features(
                {
                    "title": f"Engraved for {p.name}, {p.street}, {p.city}",
                    "description": f"questions: {p.email} / {p.phone} / {_url(p)}",
                    "topic": p.iban,  # keep field holding an IBAN
                    "category": p.ipv4,
                    "author_id": p.email,  # pseudonymize
                    "buyer_card": p.card,  # undeclared
                    "price": 9.5 + c,
                }
            ),
        )
        for c in range(3)
    ]
    return decision_pb2.RankRequest(
        slot="home", subject_id=subject, context=_features(context), candidates=candidates
    )


def _events(p: Person, subjects: list[str], index: int) -> list[event_pb2.Event]:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    common = {"ip": p.ipv6, "url": _url(p), "referrer": _url(p), "session_id": p.phone,
              "device": p.phone, "country": p.ssn}
    bodies = [
        ("custom", {**common, "text": _free_text(p), "query": f"{p.name} {p.email}",
                    "label": p.email, "name": p.card, "value": 3}),
        ("click", {**common, "text": _free_text(p), "element": p.iban, "position": 2,
                   "user_email": p.email}),
        ("conversion", {**common, "order_id": p.card, "items": p.iban, "value": 42.0,
                        "currency": p.ipv4}),
        ("page_view", {**common, "title": _free_text(p), "page_type": p.ssn, "dwell_ms": 1200}),
    ]
    return [
        event_pb2.Event(
            event_id=f"ev-{index}-{n}-leak",
            subject_id=subjects[n % len(subjects)],
            event_type=event_type,
            occurred_at=stamp,
            properties=_features(props),
        )
        for n, (event_type, props) in enumerate(bodies)
    ]


# -- searching -----------------------------------------------------------------------------


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path


def _pg_dump(url: str) -> str:
    engine = create_engine(url)
    chunks = []
    with engine.connect() as connection:
        tables = connection.execute(
            text("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
        ).scalars().all()
        for table in tables:
            rows = connection.execute(text(f'SELECT row_to_json(t)::text FROM "{table}" t')).scalars()
            chunks.append(f"-- {table}\n" + "\n".join(rows))
    engine.dispose()
    return "\n".join(chunks)


def _hits(haystacks: dict[str, str]) -> tuple[Counter[str], dict[str, set[str]], Counter[str]]:
    """Hits per type, the blobs they were found in, and raw subject-id hits."""
    per_type: Counter[str] = Counter()
    where: dict[str, set[str]] = {}
    subjects: Counter[str] = Counter()
    lowered = {name: blob.lower() for name, blob in haystacks.items()}
    for person in PEOPLE_DATA:
        for kind, values in needles(person).items():
            for needle in values:
                for name, blob in lowered.items():
                    count = blob.count(needle)
                    if count:
                        per_type[kind] += count
                        where.setdefault(kind, set()).add(name)
        for subject in subject_ids(person):
            for name, blob in haystacks.items():
                if subject in blob:
                    subjects[name] += blob.count(subject)
    return per_type, where, subjects


REPORT: dict[str, dict[str, int]] = {}


@pytest.mark.parametrize("ner", ["off", "on"])
def test_no_pattern_pii_reaches_any_byte(
    ner: str,
    database_url: str,
    start_server: Callable[..., object],
    leak_ner_model: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level("DEBUG", logger="tacit")
    privacy = {"ner_model": str(leak_ner_model)} if ner == "on" else {}
    # On SQLite the database lives in the data dir (the default), so its journals are searched too.
    url = database_url if database_url.startswith("postgresql") else ""
    handle = start_server(url, privacy=privacy)  # type: ignore[operator]
    decisions = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    events = event_pb2_grpc.EventServiceStub(handle.channel)
    audit = audit_pb2_grpc.AuditServiceStub(handle.channel)
    service = handle.metadata(Role.SERVICE)
    errors: list[str] = []

    for index, person in enumerate(PEOPLE_DATA):
        subjects = subject_ids(person)
        for n, subject in enumerate(subjects):
            response = decisions.Rank(_rank_request(person, subject, index * 10 + n), metadata=service)
            for bad_request_id in (_national_phone(person.phone), person.iban, _digits(person.card)):
                with pytest.raises(grpc.RpcError) as refused:
                    decisions.Reward(
                        decision_pb2.RewardRequest(
                            event_id=response.event_id, value=1.0, request_id=bad_request_id
                        ),
                        metadata=service,
                    )
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                errors.append(refused.value.details() or "")
            reward = decisions.Reward(
                decision_pb2.RewardRequest(
                    event_id=response.event_id, value=1.0, request_id=f"rq-{index}-{n}-ok"
                ),
                metadata=service,
            )
            assert reward.outcome == decision_pb2.REWARD_OUTCOME_JOINED
        tracked = events.TrackEvents(
            event_pb2.TrackEventsRequest(events=_events(person, subjects, index)), metadata=service
        )
        assert tracked.accepted == 4
        # A planted value as an event id is refused, not stored.
        with pytest.raises(grpc.RpcError) as refused:
            bad = _events(person, subjects, index)[0]
            bad.event_id = _digits(person.card)
            events.TrackEvents(event_pb2.TrackEventsRequest(events=[bad]), metadata=service)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        errors.append(refused.value.details() or "")

    # Let the learner write at least one checkpoint from these decisions.
    models_dir = handle.data_dir / "models"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (models_dir.exists() and any(_files(models_dir))):
        time.sleep(0.1)
    assert models_dir.exists() and any(_files(models_dir)), "the learner wrote no model file"

    auditor = handle.metadata(Role.AUDITOR)
    export_path = tmp_path / f"audit-export-{ner}.jsonl"
    with export_path.open("w") as out:
        for line in audit.ExportAuditRecords(audit_pb2.ExportAuditRecordsRequest(), metadata=auditor):
            out.write(line.json + "\n")
    verification = audit.VerifyAuditLog(audit_pb2.VerifyAuditLogRequest(), metadata=auditor)
    assert verification.ok, verification.reason
    exported = [json.loads(line) for line in export_path.read_text().splitlines()]
    kinds = Counter(record["body"]["payload_kind"] for record in exported)
    assert kinds["rank"] == PEOPLE * 4 and kinds["event.custom"] == PEOPLE
    scrubbed = Counter()
    for record in exported:
        for fld in record["body"]["fields"]:
            scrubbed.update(fld["entity_counts"])
    assert {"EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN",
            "STREET_ADDRESS"} <= set(scrubbed)
    if ner == "on":
        assert scrubbed["PERSON"] > 0 and scrubbed["LOCATION"] > 0
    else:
        assert scrubbed["PERSON"] == 0

    # Snapshot while the server runs (SQLite's -wal and -shm journals exist only now), then stop
    # (flushes the decision log, final checkpoint) and read everything again.
    haystacks: dict[str, str] = {
        f"running:{path.relative_to(handle.data_dir)}": path.read_bytes().decode("latin-1")
        for path in _files(handle.data_dir)
    }
    handle.running.stop(grace=1)  # type: ignore[attr-defined]

    files = list(_files(handle.data_dir))
    names = {p.name for p in files}
    assert any(n.endswith((".db", ".sqlite")) for n in names) or database_url.startswith("postgresql")
    for path in files:
        haystacks[str(path.relative_to(handle.data_dir))] = path.read_bytes().decode("latin-1")
    if database_url.startswith("postgresql"):
        haystacks["postgres-dump"] = _pg_dump(database_url)
    haystacks["audit-export"] = export_path.read_text()
    haystacks["logs"] = "\n".join(repr(record.__dict__) for record in caplog.records)
    captured = capfd.readouterr()
    haystacks["stdout+stderr"] = captured.out + captured.err
    haystacks["grpc-errors"] = "\n".join(errors)
    assert sum(len(blob) for blob in haystacks.values()) > 10_000

    per_type, where, subject_hits = _hits(haystacks)
    backend = "postgres" if database_url.startswith("postgresql") else "sqlite"
    REPORT[f"{backend}/ner-{ner}"] = {kind: per_type[kind] for kind in PATTERN_TYPES + COUNTED_TYPES}
    print(f"\nleak report {backend} ner={ner}: " + json.dumps(REPORT[f"{backend}/ner-{ner}"]))
    print("  counted-type locations: " + json.dumps({k: sorted(v) for k, v in where.items()}))
    print(f"  files searched: {len(files)} ({sorted(haystacks)})")

    leaked = {kind: sorted(where[kind]) for kind in PATTERN_TYPES if per_type[kind]}
    assert not leaked, f"pattern-detectable personal data found on disk/logs: {leaked}"
    assert not subject_hits, f"raw subject ids found in {dict(subject_hits)}"
    if ner == "on":
        assert per_type["NAME"] == 0 and per_type["CITY"] == 0
    if backend == "sqlite":
        assert any(name.endswith("-wal") for name in haystacks), "the WAL journal was not searched"
