"""Generalizers, table-driven: coarse output for good input, GeneralizeError otherwise."""

from __future__ import annotations

import pytest

from tacit.privacy.generalize import GENERALIZERS, GeneralizeError, get_generalizer

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1")
WINDOWS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/120.0 Safari/537.36")


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("ip", "203.0.113.77", "203.0.113.0/24"),
        ("ip", "2001:db8:abcd:12:1:2:3:4", "2001:db8:abcd::/48"),
        ("ip", "::ffff:198.51.100.9", "198.51.100.0/24"),
        ("timestamp", "2024-05-01T13:47:12+02:00", "2024-05-01T11:00:00Z"),
        ("timestamp", "2024-05-01T13:47:12Z", "2024-05-01T13:00:00Z"),
        ("timestamp", 1714571232, "2024-05-01T13:00:00Z"),
        ("timestamp", "1714571232.5", "2024-05-01T13:00:00Z"),
        ("age", 17, "0-17"),
        ("age", 25, "25-34"),
        ("age", "34", "25-34"),
        ("age", 70, "65+"),
        ("user_agent", IPHONE, "iPhone/iOS"),
        ("user_agent", WINDOWS, "Other/Windows"),
        ("geo", "52.52437,13.41053", "52.5,13.4"),
        ("geo", "-33.8688,151.2093", "-33.9,151.2"),
    ],
)
def test_generalizer_output(name: str, value: object, expected: str) -> None:
    assert get_generalizer(name)(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ip", "999.1.1.1"),
        ("ip", "john@example.com"),
        ("ip", 12345),
        ("timestamp", "yesterday"),
        ("timestamp", True),
        ("timestamp", float("nan")),
        ("age", -1),
        ("age", "old"),
        ("age", 500),
        ("geo", "91,0"),
        ("geo", "52.5"),
        ("geo", "a,b"),
        ("user_agent", ""),
        ("user_agent", "x" * 5000),
        ("user_agent", "Mozilla\x00"),
    ],
)
def test_unparseable_input_raises_without_echoing_it(name: str, value: object) -> None:
    with pytest.raises(GeneralizeError) as info:
        get_generalizer(name)(value)  # type: ignore[arg-type]
    assert str(value) not in str(info.value) or str(value) in ("", "True")


def test_registry_names_and_unknown_name() -> None:
    assert set(GENERALIZERS) == {"ip", "timestamp", "age", "user_agent", "geo"}
    with pytest.raises(KeyError, match="known"):
        get_generalizer("zip")
