"""Model lifecycle through real servers: export from one deployment, import into another with its
own database, reset to a fresh model, explanations; every change audited, bad input refused
with the field named and nothing echoed."""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import select

from tacit.server.auth import Role
from tacit.sim.client import drive, rank_request, to_features, visit_candidates, visit_context
from tacit.sim.world import ContentSite
from tacit.store.schema import AuditRecord
from tacit.v1 import decision_pb2, decision_pb2_grpc, model_pb2, model_pb2_grpc
from tests.conftest import ServerHandle
from tests.faults.test_contract_drift import call

SLOT_TASK = "bandit:home"


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Polls until ``predicate`` returns something truthy (a condition, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def models(handle: ServerHandle) -> model_pb2_grpc.ModelServiceStub:
    return model_pb2_grpc.ModelServiceStub(handle.channel)


def newest(handle: ServerHandle) -> model_pb2.Model | None:
    listed = (
        models(handle)
        .ListModels(
            model_pb2.ListModelsRequest(task=SLOT_TASK, page_size=500), metadata=handle.metadata(Role.ADMIN)
        )
        .models
    )
    return max(listed, key=lambda m: m.version) if listed else None


def probabilities(handle: ServerHandle, site_seed: int, count: int) -> tuple[list[str], list[list[float]]]:
    """Rank ``count`` fixed visits (never rewarded: they do not move the model) and return the model
    version and each candidate's probability in request order."""
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    versions, vectors = [], []
    for visit in ContentSite(seed=site_seed, n_candidates=6).visits(count):
        candidates = visit_candidates(visit)
        response = stub.Rank(
            rank_request("home", visit.subject_id, visit_context(visit), candidates),
            metadata=handle.metadata(),
        )
        by_id = {c.id: c.probability for c in response.ranking}
        versions.append(response.model_version)
        vectors.append([by_id[cid] for cid, _ in candidates])
    return versions, vectors


def serves(handle: ServerHandle, version: str) -> bool:
    return probabilities(handle, 99, 1)[0][0] == version


def audit_actions(handle: ServerHandle) -> list[str]:
    """The actions of the deployment's model_lifecycle audit records, oldest first."""
    with handle.running.runtime.db.transaction() as session:
        rows = session.execute(
            select(AuditRecord.correlation_id)
            .where(AuditRecord.payload_kind == "model_lifecycle")
            .order_by(AuditRecord.seq)
        ).scalars()
        return [row.split(":", 1)[0] for row in rows]


def train(handle: ServerHandle, decisions: int) -> model_pb2.Model:
    """Drives the simulator through the server until the learner checkpointed everything."""
    drive(handle.channel, handle.token(), ContentSite(seed=5, n_candidates=6), decisions)
    return wait_for(lambda: (m := newest(handle)) is not None and m.examples >= decisions and m)


def test_exported_model_serves_identical_probabilities_in_another_deployment_and_reset_forgets(
    server: ServerHandle, start_server: Callable[..., ServerHandle]
) -> None:
    trained = train(server, 400)
    assert (
        call(
            lambda: models(server).ExportModel(
                model_pb2.ExportModelRequest(slot="home"), metadata=server.metadata(Role.EXPERIMENTER)
            )
        ).code
        == grpc.StatusCode.PERMISSION_DENIED
    )  # type: ignore[union-attr]
    exported = models(server).ExportModel(
        model_pb2.ExportModelRequest(slot="home"), metadata=server.metadata(Role.ADMIN)
    )
    assert exported.version == trained.version and exported.task == SLOT_TASK
    with zipfile.ZipFile(io.BytesIO(exported.bundle)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert archive.read("model.vw")
    assert manifest["format"] == "tacit-vw-bundle" and manifest["version"] == trained.version
    assert manifest["examples"] == trained.examples and manifest["vw_args"] == trained.vw_args

    source_versions, source = probabilities(server, 11, 20)
    assert set(source_versions) == {trained.version}

    other = start_server()  # its own data directory and SQLite database
    imported = (
        models(other)
        .ImportModel(
            model_pb2.ImportModelRequest(slot="home", bundle=exported.bundle, sha256=exported.sha256),
            metadata=other.metadata(Role.ADMIN),
        )
        .model
    )
    assert imported.installed_by == "import" and imported.source_version == trained.version
    assert imported.examples == trained.examples and imported.vw_args == trained.vw_args
    wait_for(lambda: serves(other, imported.version))
    versions, served = probabilities(other, 11, 20)
    assert set(versions) == {imported.version}
    assert served == source  # the same model: the same probabilities, to the last bit
    assert max(served[0]) > 0.5  # trained: not uniform

    reset = models(other).ResetModel(
        model_pb2.ResetModelRequest(slot="home"), metadata=other.metadata(Role.ADMIN)
    )
    assert reset.previous_version == imported.version and reset.model.installed_by == "reset"
    assert reset.model.examples == 0
    wait_for(lambda: serves(other, reset.model.version))
    _, fresh = probabilities(other, 11, 20)
    for vector in fresh:
        assert vector == pytest.approx([1.0 / len(vector)] * len(vector), abs=1e-6)
    assert audit_actions(server) == ["export"]
    assert audit_actions(other) == ["import", "reset"]
    # The slot learns on from the fresh model; its later checkpoints keep saying where it came from.
    drive(other.channel, other.token(), ContentSite(seed=8, n_candidates=6), 30)
    learned = wait_for(lambda: (m := newest(other)) is not None and m.examples >= 30 and m)
    assert learned.installed_by == "reset" and learned.version > reset.model.version


# Planted personal values: through every field the privacy boundary treats differently.
PLANTED = ("jane.roe@example.com", "415-555-0132", "203.0.113.77", "author-jane-roe-1987")


def planted_rank(index: int) -> decision_pb2.RankRequest:
    device = ("mobile", "desktop")[index % 2]
    context = {
        "device": device,
        "referrer": "https://news.example/?from=jane.roe@example.com",
        "search_query": "call me on 415-555-0132",
        "ip": "203.0.113.77",
        "email": "jane.roe@example.com",
    }
    request = rank_request("home", f"user-{index}", {}, [])
    request.context.CopyFrom(to_features(context))
    for topic in ("sports", "news", "tech"):
        features = {"topic": topic, "author_id": "author-jane-roe-1987", "title": "by jane.roe@example.com"}
        request.candidates.append(decision_pb2.Candidate(id=f"item-{topic}", features=to_features(features)))
    return request


def test_explanations_name_what_the_model_weighs_and_never_a_planted_personal_value(
    start_server: Callable[..., ServerHandle],
) -> None:
    handle = start_server()
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    event_ids = []
    for index in range(200):
        response = stub.Rank(planted_rank(index), metadata=handle.metadata())
        # mobile users click sports, desktop users click tech: device x topic carries the weight.
        liked = "item-sports" if index % 2 == 0 else "item-tech"
        reward = 1.0 if response.chosen_id == liked else 0.0
        stub.Reward(
            decision_pb2.RewardRequest(event_id=response.event_id, value=reward), metadata=handle.metadata()
        )
        event_ids.append(response.event_id)
    wait_for(lambda: (m := newest(handle)) is not None and m.examples >= 200)
    experimenter = handle.metadata(Role.EXPERIMENTER)
    explained = models(handle).ExplainModel(
        model_pb2.ExplainModelRequest(slot="home", top_n=200), metadata=experimenter
    )
    assert explained.sample_decisions == 200 and explained.sample_rows == 600
    assert explained.interactions[0].name.startswith("U^device*A^")
    names = {item.name for item in explained.terms}
    assert any(name.startswith("U^device=mobile*A^") for name in names)
    decision = models(handle).ExplainDecision(
        model_pb2.ExplainDecisionRequest(event_id=event_ids[-1], top_n=100), metadata=experimenter
    )
    assert decision.slot == "home" and decision.candidates == 3 and decision.contributions
    assert decision.decision_model_version  # the version that decided, or the newest when retired
    assert sum(c.contribution for c in decision.contributions) == pytest.approx(
        decision.predicted_reward, abs=1e-4
    )
    # Pseudonymized tokens may appear (the author's keyed pseudonym); the raw values never do.
    output = " ".join((str(explained), str(decision))) + " ".join(
        (explained.SerializeToString().decode("latin-1"), decision.SerializeToString().decode("latin-1"))
    )
    for value in PLANTED:
        assert value not in output
        assert value.replace("-", "").replace(".", "") not in output.replace("-", "").replace(".", "")
    assert "jane" not in output.lower()


def rebundled(
    bundle: bytes, manifest_changes: dict[str, Any] | None = None, model: bytes | None = None
) -> bytes:
    """A bundle with its manifest or model changed (and nothing else)."""
    with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        model_bytes = archive.read("model.vw") if model is None else model
    manifest.update(manifest_changes or {})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.json", json.dumps(manifest))
        archive.writestr("model.vw", model_bytes)
    return buffer.getvalue()


def test_bad_lifecycle_input_names_the_field_echoes_nothing_and_writes_nothing(
    start_server: Callable[..., ServerHandle],
) -> None:

    handle = start_server()
    admin = handle.metadata(Role.ADMIN)
    stub = models(handle)
    before_checkpoint = call(
        lambda: stub.ExplainModel(model_pb2.ExplainModelRequest(slot="home"), metadata=admin)
    )
    assert before_checkpoint is not None and before_checkpoint.code == grpc.StatusCode.FAILED_PRECONDITION
    assert before_checkpoint.reason.split(" ")[0] == "NO_CHECKPOINT"
    seeded = stub.ResetModel(model_pb2.ResetModelRequest(slot="home"), metadata=admin).model
    bundle = stub.ExportModel(model_pb2.ExportModelRequest(slot="home"), metadata=admin).bundle

    def sha(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def imported(data: bytes, digest: str | None = None, slot: str = "home") -> Any:
        request = model_pb2.ImportModelRequest(
            slot=slot, bundle=data, sha256=sha(data) if digest is None else digest
        )
        return call(lambda: stub.ImportModel(request, metadata=admin))

    good_model = rebundled(bundle)
    with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
        model_bytes = archive.read("model.vw")
    corrupted = bytearray(model_bytes)
    corrupted[len(corrupted) // 2] ^= 0xFF
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    oversized = b"\0" * (4 * 1024 * 1024 + 1)
    as_experimenter = model_pb2.ImportModelRequest(slot="home", bundle=bundle, sha256=sha(bundle))
    cases = [
        (
            call(lambda: stub.ImportModel(as_experimenter, metadata=handle.metadata(Role.EXPERIMENTER))),
            grpc.StatusCode.PERMISSION_DENIED,
            "",
            "",
        ),
        (imported(oversized), invalid, "bundle", "INVALID_BUNDLE"),
        (imported(bundle, slot="zqslot"), grpc.StatusCode.NOT_FOUND, "", "SLOT_NOT_FOUND"),
        (imported(b"zq not a zip" * 10), invalid, "bundle", "INVALID_BUNDLE"),
        (imported(bundle, sha(b"zq-other")), invalid, "sha256", "BUNDLE_HASH_MISMATCH"),
        (imported(bundle, "zq" * 32), invalid, "sha256", "INVALID_BUNDLE"),
        (
            imported(rebundled(bundle, model=bytes(corrupted))),
            invalid,
            "bundle.model",
            "BUNDLE_HASH_MISMATCH",
        ),
        (
            imported(rebundled(bundle, {"model_sha256": sha(b"zq" * 50)}, model=b"zq" * 50)),
            invalid,
            "bundle.model",
            "INVALID_BUNDLE",
        ),
        (
            imported(rebundled(bundle, {"slot": "ZQ free text"})),
            invalid,
            "bundle.manifest.slot",
            "INVALID_BUNDLE",
        ),
        (imported(rebundled(bundle, {"format": "zq"})), invalid, "bundle.manifest.format", "INVALID_BUNDLE"),
    ]
    hostile_args = [
        "--cb_explore_adf --feature_mask /tmp/zqmask",
        "--cb_explore_adf --audit_regressor /tmp/zqaudit",
        "--cb_explore_adf --pid_file /tmp/zqpid",
        "--cb_explore_adf --zq_unknown_option",
        "--cb_explore_adf -q ZQ",
        "--cb_explore_adf --data zqdata",
        "--cb_explore_adf --epsilon 'zq quoted",
        "--cb_explore_adf --epsilon ../../zq",
        "--cb_explore_adf --cb_type zqnope",
        "--cb_adf --squarecb",
    ]
    for args in hostile_args:
        outcome = imported(rebundled(bundle, {"vw_args": args}))
        cases.append((outcome, invalid, "bundle.manifest.vw_args", "INVALID_VW_ARGS"))
    cases += [
        (
            call(lambda: stub.ExportModel(model_pb2.ExportModelRequest(slot="zqslot"), metadata=admin)),
            grpc.StatusCode.NOT_FOUND,
            "",
            "SLOT_NOT_FOUND",
        ),
        (
            call(
                lambda: stub.ExportModel(
                    model_pb2.ExportModelRequest(slot="home", version="zq1"), metadata=admin
                )
            ),
            invalid,
            "version",
            "INVALID_ARGUMENT",
        ),
        (
            call(
                lambda: stub.ExportModel(
                    model_pb2.ExportModelRequest(slot="home", version="v999"), metadata=admin
                )
            ),
            grpc.StatusCode.NOT_FOUND,
            "",
            "MODEL_NOT_FOUND",
        ),
        (
            call(lambda: stub.ResetModel(model_pb2.ResetModelRequest(slot="zqslot"), metadata=admin)),
            grpc.StatusCode.NOT_FOUND,
            "",
            "SLOT_NOT_FOUND",
        ),
        (
            call(
                lambda: stub.ResetModel(
                    model_pb2.ResetModelRequest(slot="home"), metadata=handle.metadata(Role.EXPERIMENTER)
                )
            ),
            grpc.StatusCode.PERMISSION_DENIED,
            "",
            "",
        ),
        (
            call(
                lambda: stub.ExplainDecision(
                    model_pb2.ExplainDecisionRequest(event_id="zq-unknown-event"), metadata=admin
                )
            ),
            grpc.StatusCode.NOT_FOUND,
            "",
            "DECISION_NOT_FOUND",
        ),
        (
            call(
                lambda: stub.ExplainModel(
                    model_pb2.ExplainModelRequest(slot="home", top_n=-1), metadata=admin
                )
            ),
            invalid,
            "top_n",
            "INVALID_ARGUMENT",
        ),
    ]
    for index, (outcome, code, field, reason) in enumerate(cases):
        assert outcome is not None and outcome.code == code, (index, outcome)
        if field:
            assert [v[0] for v in outcome.violations] == [field], (index, outcome)
        if reason:
            assert outcome.reason.split(" ")[0] == reason, (index, outcome)
        assert "zq" not in outcome.caller_visible_text().lower(), (index, outcome)
    # Nothing was half-written: one version (the reset), its file, the two audited actions.
    assert [
        m.version for m in stub.ListModels(model_pb2.ListModelsRequest(task=SLOT_TASK), metadata=admin).models
    ] == [seeded.version]
    assert sorted(p.name for p in (handle.data_dir / "models" / "bandit_home").iterdir()) == [
        f"{seeded.version}.vw"
    ]
    assert audit_actions(handle) == ["reset", "export"]
    assert not list(Path("/tmp").glob("zq*"))
    # The untouched bundle still imports.
    assert imported(good_model) is None


def test_import_and_reset_retried_with_their_request_id_change_nothing_twice(
    start_server: Callable[..., ServerHandle],
) -> None:
    handle = start_server(learner={"enabled": False})
    admin = handle.metadata(Role.ADMIN)
    stub = models(handle)

    def reset(request_id: str) -> model_pb2.ResetModelResponse:
        return stub.ResetModel(
            model_pb2.ResetModelRequest(slot="home", request_id=request_id), metadata=admin
        )

    def import_(data: bytes, request_id: str) -> model_pb2.Model:
        request = model_pb2.ImportModelRequest(
            slot="home", bundle=data, sha256=hashlib.sha256(data).hexdigest(), request_id=request_id
        )
        return stub.ImportModel(request, metadata=admin).model

    first = reset("zq-reset-0001")
    assert reset("zq-reset-0001") == first
    bundle = stub.ExportModel(model_pb2.ExportModelRequest(slot="home"), metadata=admin).bundle
    installed = import_(bundle, "zq-import-0001")
    assert import_(bundle, "zq-import-0001") == installed
    assert installed.version > first.model.version
    for change in (
        lambda: import_(rebundled(bundle), "zq-import-0001"),  # another bundle under the same key
        lambda: reset("zq-import-0001"),  # the key of an import
        lambda: import_(bundle, "zq-reset-0001"),  # the key of a reset
    ):
        outcome = call(change)
        assert outcome is not None and outcome.code == grpc.StatusCode.ALREADY_EXISTS
        assert outcome.reason.split(" ")[0] == "REQUEST_ID_REUSED"
        assert "zq" not in outcome.caller_visible_text().lower()
    listed = stub.ListModels(model_pb2.ListModelsRequest(task=SLOT_TASK), metadata=admin).models
    assert sorted(m.version for m in listed) == [first.model.version, installed.version]
    assert audit_actions(handle) == ["reset", "export", "import"]


def test_cli_exports_imports_resets_and_explains_through_the_api(
    start_server: Callable[..., ServerHandle], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tacit.cli.main import main

    source, target = start_server(), start_server()
    trained = train(source, 150)

    def tacit(handle: ServerHandle, *argv: str) -> int:
        command, rest = argv[0], list(argv[1:])
        client = ["--target", handle.target, "--data-dir", str(handle.data_dir)]
        return main(["model", command, *client, *rest])

    bundle = tmp_path / "home.zip"
    assert tacit(source, "export", "--slot", "home", str(bundle)) == 0
    assert (tmp_path / "home.zip.sha256").read_text().split()[0] in capsys.readouterr().out
    (tmp_path / "tampered.zip").write_bytes(bundle.read_bytes() + b"\0")
    (tmp_path / "tampered.zip.sha256").write_text((tmp_path / "home.zip.sha256").read_text())
    assert tacit(target, "import", "--slot", "home", str(tmp_path / "tampered.zip")) == 1
    assert "INVALID_ARGUMENT: sha256" in capsys.readouterr().err
    assert tacit(target, "import", "--slot", "home", str(bundle)) == 0
    assert f"from {trained.version}" in capsys.readouterr().out
    assert tacit(target, "explain", "--slot", "home") == 1  # no decision logged here yet
    assert "FAILED_PRECONDITION" in capsys.readouterr().err
    assert tacit(source, "explain", "--slot", "home", "--top", "5") == 0
    assert "U^device" in capsys.readouterr().out
    assert tacit(target, "reset", "--slot", "home") == 2  # without --yes nothing happens
    assert tacit(target, "reset", "--slot", "home", "--yes") == 0
    assert "reset: models/bandit:home/versions/" in capsys.readouterr().out
    assert audit_actions(target) == ["import", "reset"]
