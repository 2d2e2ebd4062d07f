"""Keyed HMAC-SHA256 pseudonyms that carry their key id, with rotation.

A pseudonym looks like ``ps1:<key_id>:<base32 digest>``. The key id lets a
verifier pick the right key after rotation; the namespace is mixed into the
MAC so the same raw value in two roles (subject id, email field) never yields
the same pseudonym. Client-chosen ids (event and request ids) are kept only as
a shorter keyed digest, ``<key_id>:<base64url>``, looked up under every held
key. Keys and raw values are never logged.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

logger = logging.getLogger("tacit.privacy")

PSEUDONYM_PREFIX = "ps1"
KEY_BYTES = 32
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_NAMESPACE_RE = re.compile(r"^[a-z0-9_.-]{1,64}$")
PSEUDONYM_RE = re.compile(r"^ps1:[A-Za-z0-9_-]{1,32}:[a-z2-7]{52}$")
# Client-chosen ids (event ids, request ids) are stored as ``<key_id>:<22 base64url chars>``:
# HMAC-SHA256 truncated to 128 bits (RFC 4868's HMAC-SHA-256-128). 128 bits keep a
# collision between two ids under one key below 1e-15 for a trillion ids, and without
# the key nothing can be tested against a digest at all; the form fits the String(64)
# id columns even with the longest key id allowed (32 + 1 + 22 = 55 characters).
CLIENT_ID_NAMESPACE = "client_id"
DIGEST_BYTES = 16
CLIENT_DIGEST_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}:[A-Za-z0-9_-]{22}$")
_KEYFILE_VERSION = 1
_FINGERPRINT_LABEL = b"tacit/pseudonym-key-fingerprint/v1"


class KeyRingError(ValueError):
    """A key file or key ring is invalid (message never contains key material)."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class KeyRing:
    """A set of HMAC keys: one active (for new pseudonyms) and some verify-only.

    ``verify_only`` maps a key id to the instant its verification window ends;
    an expired key is ignored by ``candidates`` and ``verify``.
    """

    keys: Mapping[str, bytes]
    active_key_id: str
    verify_only: Mapping[str, datetime] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.active_key_id not in self.keys:
            raise KeyRingError("active key id is not in the key ring")
        for key_id, key in self.keys.items():
            if not _KEY_ID_RE.match(key_id):
                raise KeyRingError("key ids must match [A-Za-z0-9_-]{1,32}")
            if not isinstance(key, bytes | bytearray) or len(key) < 16:
                raise KeyRingError(f"key {key_id!r} must be at least 16 bytes")
        for key_id, until in self.verify_only.items():
            if key_id not in self.keys:
                raise KeyRingError(f"verify-only key {key_id!r} has no key material")
            if until.tzinfo is None:
                raise KeyRingError("verify-only windows must be timezone-aware")
        if self.active_key_id in self.verify_only:
            raise KeyRingError("the active key cannot also be verify-only")
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))
        object.__setattr__(self, "verify_only", MappingProxyType(dict(self.verify_only)))

    def __repr__(self) -> str:  # never print key material
        return f"KeyRing(active_key_id={self.active_key_id!r}, key_ids={sorted(self.keys)!r})"

    # -- pseudonyms ---------------------------------------------------------

    def pseudonymize(self, value: str, namespace: str = "subject") -> str:
        """Pseudonym of ``value`` in ``namespace`` under the active key."""
        return self._pseudonym(self.active_key_id, value, namespace)

    def held_key_ids(self, now: datetime | None = None) -> list[str]:
        """Active key first, then verify-only keys whose window is still open."""
        moment = now or _now()
        ids = [self.active_key_id]
        ids += sorted(k for k, until in self.verify_only.items() if until > moment)
        return ids

    def candidates(
        self, value: str, namespace: str = "subject", now: datetime | None = None
    ) -> list[str]:
        """Pseudonyms of ``value`` under every key still held (for erasure look-ups)."""
        return [self._pseudonym(k, value, namespace) for k in self.held_key_ids(now)]

    def verify(
        self, value: str, pseudonym: str, namespace: str = "subject", now: datetime | None = None
    ) -> bool:
        """True when ``pseudonym`` was made from ``value`` by a key still held."""
        parts = pseudonym.split(":", 2) if isinstance(pseudonym, str) else []
        if len(parts) != 3 or parts[0] != PSEUDONYM_PREFIX:
            return False
        key_id = parts[1]
        if key_id not in self.held_key_ids(now):
            return False
        expected = self._pseudonym(key_id, value, namespace)
        return hmac.compare_digest(expected.encode(), pseudonym.encode())

    # -- client-chosen ids ----------------------------------------------------

    def digest(self, value: str, namespace: str = CLIENT_ID_NAMESPACE) -> str:
        """The stored form of a client-chosen id under the active key (``<key_id>:<mac>``)."""
        return self.digest_with(self.active_key_id, value, namespace)

    def digests(
        self, value: str, namespace: str = CLIENT_ID_NAMESPACE, now: datetime | None = None
    ) -> list[str]:
        """Digests of ``value`` under every key still held, active first (for look-ups)."""
        return [self.digest_with(k, value, namespace) for k in self.held_key_ids(now)]

    def digest_with(self, key_id: str, value: str, namespace: str = CLIENT_ID_NAMESPACE) -> str:
        """The digest of ``value`` under one held key."""
        mac = self.mac(key_id, value, namespace)[:DIGEST_BYTES]
        return f"{key_id}:{base64.urlsafe_b64encode(mac).decode('ascii').rstrip('=')}"

    def mac(self, key_id: str, value: str, namespace: str) -> bytes:
        """HMAC-SHA256 of ``value`` in ``namespace`` under key ``key_id`` (32 bytes)."""
        if not isinstance(value, str):
            raise TypeError("pseudonymize expects a str value")
        if not _NAMESPACE_RE.match(namespace):
            raise ValueError("namespace must match [a-z0-9_.-]{1,64}")
        # Length-prefix the namespace so ("a", "b:c") and ("a:b", "c") differ.
        message = f"{len(namespace)}:{namespace}:".encode() + value.encode(
            "utf-8", "surrogatepass"
        )
        return hmac.new(bytes(self.keys[key_id]), message, hashlib.sha256).digest()

    def _pseudonym(self, key_id: str, value: str, namespace: str) -> str:
        digest = self.mac(key_id, value, namespace)
        encoded = base64.b32encode(digest).decode("ascii").rstrip("=").lower()
        return f"{PSEUDONYM_PREFIX}:{key_id}:{encoded}"

    def fingerprints(self) -> dict[str, str]:
        """Key id -> `key_fingerprint` of that key, for every key in the ring."""
        return {key_id: key_fingerprint(key) for key_id, key in self.keys.items()}

    # -- persistence --------------------------------------------------------

    @classmethod
    def load_or_create(cls, path: Path) -> KeyRing:
        """Read the key file at ``path`` or create it (mode 0600) with one random key."""
        path = Path(path)
        if path.exists():
            return cls._load(path)
        key_id = _new_key_id(set())
        ring = cls(keys={key_id: secrets.token_bytes(KEY_BYTES)}, active_key_id=key_id)
        try:
            ring._save(path, exclusive=True)
        except FileExistsError:  # another process created it first: use theirs
            return cls._load(path)
        logger.info("created pseudonym key file", extra={"key_id": key_id})
        return ring

    def rotate(self, path: Path, verify_window: timedelta, now: datetime | None = None) -> KeyRing:
        """Add a new active key, keep the current one verify-only for ``verify_window``.

        Expired verify-only keys are removed from the file (crypto-shredding).
        """
        if verify_window < timedelta(0):
            raise KeyRingError("verify_window must not be negative")
        moment = now or _now()
        kept = {k: u for k, u in self.verify_only.items() if u > moment}
        kept[self.active_key_id] = moment + verify_window
        new_id = _new_key_id(set(self.keys))
        keys = {k: v for k, v in self.keys.items() if k in kept}
        keys[new_id] = secrets.token_bytes(KEY_BYTES)
        ring = KeyRing(keys=keys, active_key_id=new_id, verify_only=kept)
        ring._save(Path(path), exclusive=False)
        logger.info(
            "rotated pseudonym key",
            extra={"key_id": new_id, "previous_key_id": self.active_key_id},
        )
        return ring

    @classmethod
    def _load(cls, path: Path) -> KeyRing:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise KeyRingError(f"key file {path} must not be readable by group/others (0600)")
        try:
            data = json.loads(path.read_text("utf-8"))
            if data.get("version") != _KEYFILE_VERSION:
                raise KeyRingError("unsupported key file version")
            keys = {k: base64.b64decode(v, validate=True) for k, v in data["keys"].items()}
            verify_only = {
                k: datetime.fromisoformat(v) for k, v in data.get("verify_only", {}).items()
            }
            return cls(keys=keys, active_key_id=data["active_key_id"], verify_only=verify_only)
        except KeyRingError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Do not chain: the original exception text could echo key material.
            raise KeyRingError(f"key file {path} is malformed ({type(exc).__name__})") from None

    def _save(self, path: Path, *, exclusive: bool) -> None:
        data = {
            "version": _KEYFILE_VERSION,
            "active_key_id": self.active_key_id,
            "keys": {k: base64.b64encode(bytes(v)).decode("ascii") for k, v in self.keys.items()},
            "verify_only": {k: v.isoformat() for k, v in self.verify_only.items()},
        }
        write_secret_json(path, data, exclusive=exclusive)


def write_secret_json(path: Path, data: Mapping[str, object], *, exclusive: bool) -> None:
    """Writes a key file atomically, 0600 from its first byte and synced; `exclusive` fails if it exists."""
    payload = json.dumps(data, sort_keys=True, indent=2).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if exclusive:
            os.link(tmp, path)  # fails if another process created it first
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def key_fingerprint(key: bytes) -> str:
    """HMAC-SHA256 of a fixed label under ``key`` (hex): equal keys give equal fingerprints.

    Safe to store and compare: without the key it cannot be computed, and it reveals
    nothing about the key (the key is 256 random bits).
    """
    return hmac.new(bytes(key), _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()


def _new_key_id(existing: set[str]) -> str:
    while True:
        key_id = "k" + secrets.token_hex(4)
        if key_id not in existing:
            return key_id


def is_pseudonym(text: str) -> bool:
    """True when ``text`` is shaped like one of our pseudonyms."""
    return bool(PSEUDONYM_RE.match(text))


def is_client_digest(text: str) -> bool:
    """True when ``text`` is shaped like a stored client-id digest."""
    return bool(CLIENT_DIGEST_RE.match(text))
