"""Generalizers: pure functions that coarsen a quasi-identifier, registered by name.

Each takes a flat value and returns a coarser string; input it cannot parse
raises ``GeneralizeError`` and the boundary drops the field (fail closed).
"""

from __future__ import annotations

import functools
import ipaddress
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType

from ua_parser import parse as parse_user_agent

Value = str | int | float | bool
Generalizer = Callable[[Value], str]

MAX_INPUT_CHARS = 1_024
AGE_BANDS: tuple[tuple[int, int], ...] = (
    (0, 17), (18, 24), (25, 34), (35, 44), (45, 54), (55, 64),
)
GEO_DECIMALS = 1  # ~11 km of latitude


class GeneralizeError(ValueError):
    """The value cannot be generalized; the message never contains the value."""


def _as_text(value: Value, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str):
        raise GeneralizeError(f"{what} must be a string")
    text = value.strip()
    if not text or len(text) > MAX_INPUT_CHARS:
        raise GeneralizeError(f"{what} is empty or too long")
    return text


def generalize_ip(value: Value) -> str:
    """IPv4 to its /24 network, IPv6 to its /48 (CIDR notation).

    An IPv6 address that embeds an IPv4 (see ``embedded_ipv4``) becomes that
    IPv4's /24: its /48 would keep the IPv4 (all of it, for 6to4).
    """
    text = _as_text(value, "ip")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        raise GeneralizeError("not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address):
        embedded = embedded_ipv4(address)
        if embedded is not None:
            address = embedded
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries, if it is one of the embedding forms.

    IPv4-mapped (::ffff:0:0/96), 6to4 (2002::/16, bits 16-47), Teredo (2001::/32, the
    client in the last 32 bits XOR 0xffffffff; the stdlib undoes that), NAT64
    (64:ff9b::/96 and the local-use 64:ff9b:1::/48, last 32 bits as in RFC 6052's /96
    layout) and the deprecated IPv4-compatible ::/96 (but not :: and ::1). A /48 of
    any of them would keep (part of) that IPv4, so the caller generalizes the IPv4.
    """
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64_WELL_KNOWN or address in _NAT64_LOCAL:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:
        return ipaddress.IPv4Address(int(address))
    return None


def generalize_timestamp(value: Value) -> str:
    """ISO 8601 or epoch seconds to the UTC hour, e.g. ``2024-05-01T13:00:00Z``."""
    if isinstance(value, bool):
        raise GeneralizeError("timestamp must be ISO 8601 or epoch seconds")
    try:
        if isinstance(value, int | float):
            if not math.isfinite(value):
                raise GeneralizeError("timestamp is not finite")
            moment = datetime.fromtimestamp(float(value), tz=UTC)
        else:
            text = _as_text(value, "timestamp")
            try:
                moment = datetime.fromtimestamp(float(text), tz=UTC)
            except ValueError:
                moment = datetime.fromisoformat(text.replace("z", "Z"))
                if moment.tzinfo is None:  # naive: treated as UTC, documented
                    moment = moment.replace(tzinfo=UTC)
                moment = moment.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        raise GeneralizeError("timestamp must be ISO 8601 or epoch seconds") from None
    return moment.replace(minute=0, second=0, microsecond=0).strftime("%Y-%m-%dT%H:00:00Z")


def generalize_age(value: Value) -> str:
    """Age in years to a band such as ``25-34``; 65 and over is ``65+``."""
    if isinstance(value, bool):
        raise GeneralizeError("age must be a number")
    try:
        age = float(value)
    except (TypeError, ValueError):
        raise GeneralizeError("age must be a number") from None
    if not math.isfinite(age) or age < 0 or age > 130:
        raise GeneralizeError("age is out of range")
    years = int(age)
    for low, high in AGE_BANDS:
        if low <= years <= high:
            return f"{low}-{high}"
    return "65+"


@functools.lru_cache(maxsize=4_096)
def _ua_families(text: str) -> str:
    result = parse_user_agent(text)
    device = result.device.family if result.device else "Other"
    os_family = result.os.family if result.os else "Other"
    return f"{device}/{os_family}"


def generalize_user_agent(value: Value) -> str:
    """A user-agent string to ``device_family/os_family`` (e.g. ``iPhone/iOS``)."""
    text = _as_text(value, "user_agent")
    if not text.isprintable():
        raise GeneralizeError("user_agent has control characters")
    return _ua_families(text)


def generalize_geo(value: Value) -> str:
    """``"lat,lon"`` to a cell of ``GEO_DECIMALS`` decimal degrees (floored, not rounded)."""
    text = _as_text(value, "geo")
    parts = text.split(",")
    if len(parts) != 2:
        raise GeneralizeError("geo must be 'lat,lon'")
    try:
        lat, lon = (float(p) for p in parts)
    except ValueError:
        raise GeneralizeError("geo must be 'lat,lon'") from None
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        raise GeneralizeError("geo is out of range")
    scale = 10**GEO_DECIMALS
    cell_lat = math.floor(lat * scale) / scale
    cell_lon = math.floor(lon * scale) / scale
    return f"{cell_lat:.{GEO_DECIMALS}f},{cell_lon:.{GEO_DECIMALS}f}"


GENERALIZERS: Mapping[str, Generalizer] = MappingProxyType(
    {
        "ip": generalize_ip,
        "timestamp": generalize_timestamp,
        "age": generalize_age,
        "user_agent": generalize_user_agent,
        "geo": generalize_geo,
    }
)


def get_generalizer(name: str) -> Generalizer:
    """The generalizer registered as ``name``; ``KeyError`` lists the known names."""
    try:
        return GENERALIZERS[name]
    except KeyError:
        raise KeyError(f"unknown generalizer {name!r}; known: {sorted(GENERALIZERS)}") from None
