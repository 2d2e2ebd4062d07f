"""Bearer-token roles: who may call which service.

Tokens live in a JSON file created at first start (mode 0600); the server keeps
only their SHA-256. A secrets file that other users can read is refused, not loaded.
Health checks and reflection need no token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from tacit.server.config import ConfigError


class Role(StrEnum):
    SERVICE = "service"
    EXPERIMENTER = "experimenter"
    AUDITOR = "auditor"
    ADMIN = "admin"


PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

# Which roles may call each method; a service name maps all its methods.
METHOD_ROLES: dict[str, frozenset[Role]] = {
    "/tacit.v1.DecisionService/": frozenset({Role.SERVICE, Role.ADMIN}),
    "/tacit.v1.EventService/": frozenset({Role.SERVICE, Role.ADMIN}),
    "/tacit.v1.PredictionService/": frozenset({Role.SERVICE, Role.ADMIN}),
    "/tacit.v1.ExperimentService/": frozenset({Role.EXPERIMENTER, Role.ADMIN}),
    # Model lifecycle changes (and a model file leaving the deployment) are the admin's.
    "/tacit.v1.ModelService/ExportModel": frozenset({Role.ADMIN}),
    "/tacit.v1.ModelService/ImportModel": frozenset({Role.ADMIN}),
    "/tacit.v1.ModelService/ResetModel": frozenset({Role.ADMIN}),
    "/tacit.v1.MetricService/": frozenset({Role.EXPERIMENTER, Role.ADMIN}),
    "/tacit.v1.ModelService/": frozenset({Role.EXPERIMENTER, Role.ADMIN}),
    "/tacit.v1.SlotService/": frozenset({Role.EXPERIMENTER, Role.ADMIN}),
    "/tacit.v1.CatalogueService/GetCatalogueItem": frozenset({Role.SERVICE, Role.EXPERIMENTER, Role.ADMIN}),
    "/tacit.v1.CatalogueService/ListCatalogueItems": frozenset({Role.SERVICE, Role.EXPERIMENTER, Role.ADMIN}),
    "/tacit.v1.CatalogueService/": frozenset({Role.EXPERIMENTER, Role.ADMIN}),
    "/tacit.v1.AuditService/EraseSubject": frozenset({Role.AUDITOR, Role.ADMIN}),
    "/tacit.v1.AuditService/": frozenset({Role.AUDITOR}),
}


def required_roles(method: str) -> frozenset[Role] | None:
    """Roles allowed for a full method name; None means public.

    A name outside the table needs admin here, but the auth interceptor answers a method
    the server does not serve UNIMPLEMENTED to every authenticated caller before roles apply.
    """
    if method.startswith(PUBLIC_PREFIXES):
        return None
    if method in METHOD_ROLES:
        return METHOD_ROLES[method]
    for prefix, roles in METHOD_ROLES.items():
        if prefix.endswith("/") and method.startswith(prefix):
            return roles
    return frozenset({Role.ADMIN})


class InsecureFileError(ConfigError):
    """A secrets file is readable or writable by other users; the start stops."""


def require_private(path: Path) -> None:
    """Refuses a secrets file that group or others may read or write (names the file and the fix)."""
    if not path.exists():
        return
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise InsecureFileError(
            f"{path} has mode {mode:04o}: other users can read this secrets file; "
            f"run `chmod 600 {path}` (and consider rotating what it holds), then start again"
        )


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class TokenStore:
    """Token digests and their roles."""

    digests: tuple[tuple[bytes, Role], ...]

    def role_of(self, token: str) -> Role | None:
        digest = _digest(token)
        found = None
        for known, role in self.digests:
            if hmac.compare_digest(known, digest):
                found = role
        return found

    @classmethod
    def load_or_create(cls, path: Path) -> tuple[TokenStore, bool]:
        """Reads the tokens file, creating one token per role at first start."""
        created = False
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tokens = {role.value: "tct_" + secrets.token_urlsafe(32) for role in Role}
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump({"tokens": [{"role": r, "token": t} for r, t in tokens.items()]}, handle, indent=2)
            created = True
        require_private(path)
        data = json.loads(path.read_text())
        digests = tuple((_digest(item["token"]), Role(item["role"])) for item in data["tokens"])
        return cls(digests), created


def read_token(path: Path, role: Role) -> str:
    """The first token for `role` in a tokens file (for the CLI and the demo)."""
    data = json.loads(path.read_text())
    for item in data["tokens"]:
        if item["role"] == role.value:
            return str(item["token"])
    raise KeyError(f"no token for role {role.value} in {path}")
