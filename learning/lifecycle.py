"""A slot's model out of one deployment and into another, or back to a fresh start.

A bundle is a zip of ``manifest.json`` (what the model is: slot, version, vw_args, the slot's
reward settings, example count, VW version, the model's SHA-256) and ``model.vw`` (the VW
checkpoint). The importer trusts nothing in it: the bundle's own SHA-256 must be the one the
operator was given, the model's must be the manifest's, the manifest's fields must have their
shapes, ``vw_args`` must pass the same checks as a slot's configured arguments, and VW must load
the model with them. An installed model (import or reset) is registered as the slot's next
version, marked ``installed_by`` so the learner adopts it and serving loads it with its own args.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shlex
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import vowpalwabbit
from sqlalchemy import select
from sqlalchemy.orm import Session

from tacit.learning.bandit import BanditConfigError, SlotModel, check_workspace
from tacit.learning.registry import (
    INSTALLED,
    Checkpoint,
    bandit_task,
    file_sha256,
    lock_task,
    newest_row,
    register_file,
    version_checkpoint,
)
from tacit.store.schema import ModelVersion

BUNDLE_FORMAT = "tacit-vw-bundle"
FORMAT_VERSION = 1
MAX_BUNDLE_BYTES = 4 * 1024 * 1024
MANIFEST = "manifest.json"
MODEL = "model.vw"
MAX_VW_ARGS_CHARS = 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
VERSION = re.compile(r"^v[0-9]{1,12}$")
_SLOT = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


# A bundle's vw_args come from elsewhere: only options that shape learning and exploration, none
# that names a file VW would read or write (--feature_mask, --dictionary, --audit_regressor,
# --pid_file ...), and values that are numbers or short names, never paths.
IMPORTABLE_OPTIONS = frozenset(
    {
        "--cb_explore_adf", "--cb_adf", "--cb_type", "--epsilon", "--first", "--bag", "--cover",
        "--softmax", "--lambda", "--squarecb", "--gamma_scale", "--gamma_exponent", "--regcb",
        "--regcbopt", "--mellowness", "--rnd", "--rnd_alpha", "--rnd_invlambda", "--synthcover",
        "--synthcoverpsi", "--synthcoversize", "--nounif", "--psi", "--first_only", "--elim",
        "--cb_min_cost", "--cb_max_cost", "--clip_p", "--large_action_space", "--max_actions",
        "-q", "--quadratic", "--cubic", "--interactions", "--ignore", "--ignore_linear", "--keep",
        "-b", "--bit_precision", "-l", "--learning_rate", "--power_t", "--initial_t",
        "--decay_learning_rate", "--l1", "--l2", "--adaptive", "--normalized", "--invariant",
        "--sgd", "--adax", "--random_seed", "--noconstant", "--loss_function", "--quantile_tau",
        "--hash", "--hash_seed", "--coin", "--ftrl", "--ftrl_alpha", "--ftrl_beta", "--pistol",
        "--freegrad", "--link", "--min_prediction", "--max_prediction", "--holdout_off",
    }
)  # fmt: skip
_OPTION_VALUE = re.compile(r"^[A-Za-z0-9_.:+\-]{1,32}$")
_NEGATIVE_NUMBER = re.compile(r"^-[0-9.]")


class BundleError(ValueError):
    """A bundle (or its hash) that is refused; ``field`` names what is wrong, never a value in it."""

    def __init__(self, field: str, description: str, reason: str = "INVALID_BUNDLE"):
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description
        self.reason = reason


class ExportError(RuntimeError):
    """A checkpoint that cannot be exported (missing, failing its hash, too large)."""


def check_importable_arguments(vw_args: str) -> None:
    """Refuses any option outside IMPORTABLE_OPTIONS and any value that is not a number or a name."""
    try:
        tokens = shlex.split(vw_args)
    except ValueError:
        raise BundleError(
            "bundle.manifest.vw_args", "is not a valid argument string", "INVALID_VW_ARGS"
        ) from None
    for token in tokens:
        name, _, glued = token.partition("=") if token.startswith("--") else (token, "", "")
        if token.startswith("-q") and not token.startswith("--"):
            name, glued = "-q", token[2:]
        is_option = name.startswith("-") and _NEGATIVE_NUMBER.match(name) is None
        if is_option and name not in IMPORTABLE_OPTIONS:
            raise BundleError(
                "bundle.manifest.vw_args",
                "holds an option outside the importable set (options that name files are refused)",
                "INVALID_VW_ARGS",
            )
        for value in (glued,) if is_option else (token,):
            if value and not _OPTION_VALUE.match(value):
                raise BundleError(
                    "bundle.manifest.vw_args",
                    "holds a value that is not a number or a short name",
                    "INVALID_VW_ARGS",
                )


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its manifest (every field checked) and the model bytes."""

    manifest: Mapping[str, Any]
    model: bytes
    sha256: str


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export_bundle(
    session: Session, slot: str, version: str | None, slot_config: Mapping[str, float]
) -> tuple[bytes, Checkpoint]:
    """The bundle of a registered slot version (the newest when ``version`` is None).

    Raises LookupError when the slot has no such version, ExportError when its file fails.
    """
    task = bandit_task(slot)
    if version is None:
        row = newest_row(session, task)
        if row is None:
            raise LookupError("the slot has no registered model")
        version = row.version
    found = version_checkpoint(session, task, version)
    if found is None:
        raise LookupError("the slot has no such version")
    checkpoint, vw_args = found
    if not checkpoint.path.exists() or file_sha256(checkpoint.path) != checkpoint.sha256:
        raise ExportError("the checkpoint fails its hash check")
    model = checkpoint.path.read_bytes()
    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": FORMAT_VERSION,
        "slot": slot,
        "task": task,
        "version": checkpoint.version,
        "vw_args": vw_args,
        "config": dict(slot_config),
        "examples": checkpoint.examples,
        "exported_at": datetime.now(UTC).isoformat(),
        "vw_version": vowpalwabbit.__version__,
        "model_sha256": checkpoint.sha256,
        "model_bytes": len(model),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in (
            (MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode()),
            (MODEL, model),
        ):
            archive.writestr(zipfile.ZipInfo(name, _ZIP_TIME), content, zipfile.ZIP_DEFLATED)
    data = buffer.getvalue()
    if len(data) > MAX_BUNDLE_BYTES:
        raise ExportError(f"the bundle is larger than {MAX_BUNDLE_BYTES} bytes")
    return data, checkpoint


def _member(archive: zipfile.ZipFile, name: str) -> bytes:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise BundleError("bundle", f"has no {name}") from None
    if info.file_size > MAX_BUNDLE_BYTES:
        raise BundleError("bundle", f"{name} unpacks to more than {MAX_BUNDLE_BYTES} bytes")
    with archive.open(info) as handle:
        content = handle.read(MAX_BUNDLE_BYTES + 1)
    if len(content) > MAX_BUNDLE_BYTES:
        raise BundleError("bundle", f"{name} unpacks to more than {MAX_BUNDLE_BYTES} bytes")
    return content


def _checked_manifest(raw: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BundleError("bundle.manifest", "is not JSON") from None
    if not isinstance(manifest, dict):
        raise BundleError("bundle.manifest", "is not a JSON object")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError("bundle.manifest.format", f"must be {BUNDLE_FORMAT}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError("bundle.manifest.format_version", f"must be {FORMAT_VERSION}")
    shapes = (
        ("slot", _SLOT),
        ("version", VERSION),
        ("model_sha256", _SHA256),
    )
    for key, pattern in shapes:
        value = manifest.get(key)
        if not isinstance(value, str) or not pattern.match(value):
            raise BundleError(f"bundle.manifest.{key}", f"must match {pattern.pattern}")
    examples = manifest.get("examples")
    if not isinstance(examples, int) or isinstance(examples, bool) or not 0 <= examples < 2**62:
        raise BundleError("bundle.manifest.examples", "must be a non-negative integer")
    vw_args = manifest.get("vw_args")
    if not isinstance(vw_args, str) or not 0 < len(vw_args) <= MAX_VW_ARGS_CHARS:
        raise BundleError(
            "bundle.manifest.vw_args", f"must be a string of 1 to {MAX_VW_ARGS_CHARS} characters"
        )
    check_importable_arguments(vw_args)
    try:
        check_workspace(vw_args)
    except BanditConfigError as error:
        # Our own messages name only Tacit's constants; VW's may repeat the argument text.
        text = str(error)
        described = text if not text.startswith("Vowpal Wabbit refuses") else "Vowpal Wabbit refuses it"
        raise BundleError("bundle.manifest.vw_args", described, "INVALID_VW_ARGS") from None
    return manifest


def read_bundle(data: bytes, expected_sha256: str) -> Bundle:
    """Verifies a bundle against the SHA-256 its exporter reported and checks all of it, down to
    VW loading the model with the manifest's vw_args."""
    expected = expected_sha256.strip().lower()
    if not _SHA256.match(expected):
        raise BundleError("sha256", "must be 64 hexadecimal characters")
    if not data:
        raise BundleError("bundle", "is required")
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError("bundle", f"is larger than {MAX_BUNDLE_BYTES} bytes")
    if sha256_hex(data) != expected:
        raise BundleError("sha256", "does not match the bundle's SHA-256", "BUNDLE_HASH_MISMATCH")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if sorted(archive.namelist()) != sorted((MANIFEST, MODEL)):
                raise BundleError("bundle", f"must hold exactly {MANIFEST} and {MODEL}")
            manifest = _checked_manifest(_member(archive, MANIFEST))
            model = _member(archive, MODEL)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError):
        raise BundleError("bundle", "is not a readable zip") from None
    if sha256_hex(model) != manifest["model_sha256"]:
        raise BundleError(
            "bundle.model", "does not match the manifest's model_sha256", "BUNDLE_HASH_MISMATCH"
        )
    _loadable(str(manifest["vw_args"]), model)  # before any transaction: it takes a second or two
    return Bundle(manifest, model, expected)


# Run in a child process: a model file VW chokes on (it is not ours until it passes) costs the
# child, never the server. It loads the model as serving will and predicts one example.
_LOAD_CHECK = """
import sys
from pathlib import Path
from tacit.learning.bandit import SlotModel
model = SlotModel(sys.argv[1], model_path=Path(sys.argv[2]))
pmf = model.predict({}, [{}, {}]).probabilities
model.close()
sys.exit(0 if len(pmf) == 2 and abs(sum(pmf) - 1.0) < 1e-6 else 3)
"""
LOAD_CHECK_TIMEOUT_SECONDS = 120.0


def _loadable(vw_args: str, model: bytes) -> None:
    """VW loads the model with ``vw_args`` (in a child process) and predicts a probability vector."""
    with tempfile.TemporaryDirectory(prefix="tacit-import-") as directory:
        path = Path(directory) / MODEL
        path.write_bytes(model)
        try:
            result = subprocess.run(
                [sys.executable, "-c", _LOAD_CHECK, vw_args, str(path)],
                capture_output=True,
                timeout=LOAD_CHECK_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise BundleError("bundle.model", "Vowpal Wabbit did not load it in time") from None
    if result.returncode != 0:
        raise BundleError(
            "bundle.model", "Vowpal Wabbit cannot load it with the manifest's vw_args and predict"
        )


def installed_by_request(session: Session, slot: str, request_keys: Sequence[str]) -> ModelVersion | None:
    """The version an earlier import or reset with one of ``request_keys`` (digests of its
    request_id) installed, while it is still registered. Takes the slot's registry lock."""
    task = bandit_task(slot)
    lock_task(session, task)
    rows = session.execute(
        select(ModelVersion).where(ModelVersion.task == task).order_by(ModelVersion.id)
    ).scalars()
    for row in rows:  # the oldest match: later checkpoints inherit the marker
        origin = (row.details or {}).get(INSTALLED)
        if isinstance(origin, dict) and origin.get("request") in request_keys:
            return row
    return None


def install_bundle(
    session: Session, slot: str, bundle: Bundle, models_dir: Path, request_key: str = ""
) -> Checkpoint:
    """Registers a bundle `read_bundle` verified as ``slot``'s next version (in the caller's transaction)."""
    manifest = bundle.manifest
    vw_args = str(manifest["vw_args"])
    origin = {
        "action": "import",
        "source_slot": manifest["slot"],
        "source_version": manifest["version"],
        "source_sha256": manifest["model_sha256"],
        "bundle_sha256": bundle.sha256,
        **({"request": request_key} if request_key else {}),
    }
    return register_file(
        session,
        bandit_task(slot),
        models_dir,
        lambda tmp: tmp.write_bytes(bundle.model),
        int(manifest["examples"]),
        {"vw_args": vw_args, INSTALLED: origin},
    )


def reset_slot(
    session: Session,
    slot: str,
    vw_args: str,
    models_dir: Path,
    random_seed: int | None = None,
    request_key: str = "",
) -> tuple[Checkpoint, str | None]:
    """Registers a fresh, untrained model with ``vw_args`` as ``slot``'s next version.

    Returns it and the version it replaces (None when the slot had none)."""
    task = bandit_task(slot)
    previous = newest_row(session, task)
    previous_version = previous.version if previous is not None else None
    fresh = SlotModel(vw_args, model_version="reset", random_seed=random_seed)
    try:
        checkpoint = register_file(
            session,
            task,
            models_dir,
            fresh.save,
            0,
            {
                "vw_args": vw_args,
                INSTALLED: {
                    "action": "reset",
                    "previous_version": previous_version or "",
                    **({"request": request_key} if request_key else {}),
                },
            },
        )
    finally:
        fresh.close()
    return checkpoint, previous_version
