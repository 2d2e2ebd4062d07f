"""Model lifecycle through real servers: export from one deployment, import into another with its
own database, reset to a fresh model, explanations; every change audited, bad input refused
with the field named and nothing echoed."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from sqlalchemy import select

from tacit.server.auth import Role
from tacit.sim.client import drive, rank_request, visit_candidates, visit_context
from tacit.sim.world import ContentSite
from tacit.store.schema import AuditRecord
from tacit.v1 import decision_pb2_grpc, model_pb2, model_pb2_grpc
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
