"""Throughput of the boundary (not a test): .venv/bin/python tests/privacy/bench_boundary.py"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from tacit.privacy.analyzer import AnalyzerSettings, build_analyzer
from tacit.privacy.boundary import BoundaryLimits, PrivacyBoundary
from tacit.privacy.policy import default_policy_set
from tacit.privacy.pseudonym import KeyRing

UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
      "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1")
TEXT = ("I ordered the blue jacket last week and it still has not arrived, please call me "
        "at 212-555-0199 or write to jane.roe@example.com about order 4471 before Friday ok")


def rate(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    keyring = KeyRing.load_or_create(Path(tempfile.mkdtemp()) / "keys.json")
    boundary = PrivacyBoundary(default_policy_set(), keyring,
                               build_analyzer(AnalyzerSettings()), BoundaryLimits())
    structured = {"device": "mobile", "hour": 13, "day_of_week": 2, "country": "US",
                  "language": "en-US", "ip": "203.0.113.77", "user_agent": UA,
                  "is_returning": True}
    with_referrer = {**structured, "referrer": "https://news.example.com/a/b?utm_source=x"}
    text = {"text": TEXT[:200], "dwell_ms": 1200}
    for name, kind, payload, n in [
        ("structured 8 fields", "rank_context", structured, 20_000),
        ("structured + referrer URL", "rank_context", with_referrer, 5_000),
        ("200-char free text", "event.custom", text, 2_000),
    ]:
        boundary.anonymize(kind, payload, "warm-up")
        print(f"{name:28s} {rate(lambda k=kind, p=payload: boundary.anonymize(k, p, 'c'), n):10.0f}"
              " payloads/s")


if __name__ == "__main__":
    main()
