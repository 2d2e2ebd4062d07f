"""Audit chain keys: the secret that authenticates the chain, kept outside the database.

The key file (``audit-keys.json`` beside the pseudonym key file, mode 0600) holds
one or more 32-byte keys by id, the active one, and the legacy pin: the head of the
chain the pre-HMAC code left behind when this file was created (seq 0 for a fresh
database). Each key does two jobs:

- HMAC-SHA256 of every chain record and of its correlation id (the commitment that
  lets a correlation id be blanked later without breaking the chain);
- an Ed25519 signing key derived from it (HKDF), which signs anchors. The public key
  lets a compliance team check an anchor it keeps elsewhere without holding a
  secret that could forge one.

Audit keys are never deleted: verifying an old record needs the key it was made
with, so rotation only adds a new active key. Key material is never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tacit.privacy.pseudonym import write_secret_json

logger = logging.getLogger("tacit.privacy")

AUDIT_KEY_BYTES = 32
AUDIT_KEYS_FILENAME = "audit-keys.json"
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_FILE_VERSION = 1
_SIGNING_INFO = b"tacit audit anchor ed25519 v1"
_CORRELATION_LABEL = b"tacit-audit-correlation-v1\n"
_RECORD_LABEL = "tacit-audit-record-v2"
GENESIS_HASH = "0" * 64


class AuditKeyError(ValueError):
    """An audit key file or key id is invalid (the message never holds key material)."""


def audit_keys_path(pseudonym_keys_path: Path) -> Path:
    """Where the audit keys live: beside the pseudonym key file."""
    return Path(pseudonym_keys_path).with_name(AUDIT_KEYS_FILENAME)


@dataclass(frozen=True)
class LegacyPin:
    """The last record written by the unkeyed (plain SHA-256) code, pinned when keys began."""

    seq: int
    record_hash: str


@dataclass(frozen=True)
class AuditKeys:
    """The audit key ring: every key ever used (for verification) and the active one."""

    keys: Mapping[str, bytes]
    active_key_id: str
    legacy: LegacyPin

    def __post_init__(self) -> None:
        if self.active_key_id not in self.keys:
            raise AuditKeyError("active audit key id is not in the key ring")
        for key_id, key in self.keys.items():
            if not _KEY_ID_RE.match(key_id):
                raise AuditKeyError("audit key ids must match [A-Za-z0-9_-]{1,32}")
            if not isinstance(key, bytes | bytearray) or len(key) < 16:
                raise AuditKeyError(f"audit key {key_id!r} must be at least 16 bytes")
        if self.legacy.seq < 0 or len(self.legacy.record_hash) != 64:
            raise AuditKeyError("the legacy pin needs a non-negative seq and a 64-hex hash")
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))

    def __repr__(self) -> str:  # never print key material
        return f"AuditKeys(active_key_id={self.active_key_id!r}, key_ids={sorted(self.keys)!r})"

    @classmethod
    def generate(cls, legacy: LegacyPin | None = None) -> AuditKeys:
        """A fresh ring with one random key (in memory; ``save`` writes it)."""
        key_id = _new_key_id(set())
        key = secrets.token_bytes(AUDIT_KEY_BYTES)
        return cls({key_id: key}, key_id, legacy or LegacyPin(0, GENESIS_HASH))

    def _key(self, key_id: str) -> bytes:
        try:
            return bytes(self.keys[key_id])
        except KeyError:
            raise AuditKeyError(f"audit key {key_id!r} is not in the key file") from None

    def has(self, key_id: str) -> bool:
        return key_id in self.keys

    # -- chain records --------------------------------------------------------

    def correlation_commitment(self, key_id: str, correlation_id: str) -> str:
        """HMAC of a correlation id: stored in the MAC-covered body so the raw column can be blanked."""
        message = _CORRELATION_LABEL + correlation_id.encode("utf-8", "surrogatepass")
        return hmac.new(self._key(key_id), message, hashlib.sha256).hexdigest()

    def record_mac(self, key_id: str, prev_hash: str, seq: int, body_json: str) -> str:
        """HMAC-SHA256 over the previous link, the sequence number and the body."""
        material = f"{_RECORD_LABEL}\n{key_id}\n{prev_hash}\n{seq}\n{body_json}".encode()
        return hmac.new(self._key(key_id), material, hashlib.sha256).hexdigest()

    # -- anchors ----------------------------------------------------------------

    def _signing_key(self, key_id: str) -> Ed25519PrivateKey:
        seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SIGNING_INFO).derive(
            self._key(key_id)
        )
        return Ed25519PrivateKey.from_private_bytes(seed)

    def public_key(self, key_id: str | None = None) -> bytes:
        """Raw 32-byte Ed25519 public key that verifies anchors signed under ``key_id``."""
        key = self._signing_key(key_id or self.active_key_id).public_key()
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def sign(self, message: bytes, key_id: str | None = None) -> bytes:
        return self._signing_key(key_id or self.active_key_id).sign(message)

    # -- persistence ------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> AuditKeys:
        path = Path(path)
        if path.stat().st_mode & 0o077:
            raise AuditKeyError(f"audit key file {path} must not be readable by group/others (0600)")
        try:
            data = json.loads(path.read_text("utf-8"))
            if data.get("version") != _FILE_VERSION:
                raise AuditKeyError("unsupported audit key file version")
            keys = {k: base64.b64decode(v, validate=True) for k, v in data["keys"].items()}
            legacy = LegacyPin(int(data["legacy"]["seq"]), str(data["legacy"]["record_hash"]))
            return cls(keys, data["active_key_id"], legacy)
        except AuditKeyError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Not chained: the original text could echo key material.
            raise AuditKeyError(f"audit key file {path} is malformed ({type(exc).__name__})") from None

    @classmethod
    def load_or_create(cls, path: Path, legacy: LegacyPin) -> AuditKeys:
        """Read the key file or create it (0600) with one key and ``legacy`` as the pin.

        ``legacy`` is the current head of the stored chain: records up to it were
        written without a key and stay verifiable as a plain SHA-256 prefix.
        """
        path = Path(path)
        if path.exists():
            return cls.load(path)
        ring = cls.generate(legacy)
        try:
            ring.save(path, exclusive=True)
        except FileExistsError:  # another process created it first: use theirs
            return cls.load(path)
        logger.info("created audit key file", extra={"key_id": ring.active_key_id})
        return ring

    def rotate(self, path: Path) -> AuditKeys:
        """Adds a new active key; every older key stays for verification."""
        new_id = _new_key_id(set(self.keys))
        keys = dict(self.keys)
        keys[new_id] = secrets.token_bytes(AUDIT_KEY_BYTES)
        ring = AuditKeys(keys, new_id, self.legacy)
        ring.save(Path(path), exclusive=False)
        logger.info("rotated audit key", extra={"key_id": new_id, "previous_key_id": self.active_key_id})
        return ring

    def save(self, path: Path, *, exclusive: bool) -> None:
        data = {
            "version": _FILE_VERSION,
            "active_key_id": self.active_key_id,
            "keys": {k: base64.b64encode(bytes(v)).decode("ascii") for k, v in self.keys.items()},
            "legacy": {"seq": self.legacy.seq, "record_hash": self.legacy.record_hash},
        }
        write_secret_json(path, data, exclusive=exclusive)


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` (public key only)."""
    from cryptography.exceptions import InvalidSignature

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _new_key_id(existing: set[str]) -> str:
    while True:
        key_id = "a" + secrets.token_hex(4)
        if key_id not in existing:
            return key_id
