"""Challenger arms: where experiments meet learning (the two never import each other).

An experiment arm's policy may be `bandit:<VW arguments>` — a second VW workspace for the slot,
trained by the learner from its arm's decisions (or from every decision of the slot) and
checkpointed as `challenger:<experiment id>:<arm>` — or `model:<version>`, a pinned checkpoint of
the slot that never learns. This module turns the experiment service's view of those arms into
learning's (`ChallengerSpec`), checks a policy when an experiment is created, and, when an
experiment ships a challenger, makes it the slot's policy (its arguments and checkpoint).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sqlalchemy.orm import Session

from tacit.experiments.service import ArmAssignment, Challenger, ExperimentService
from tacit.experiments.service.definitions import BANDIT_CHALLENGER, PINNED_MODEL
from tacit.learning.bandit import BanditConfigError, SlotModel, check_workspace
from tacit.learning.registry import (
    ChallengerSpec,
    ModelIntegrityError,
    bandit_task,
    challenger_task,
    file_sha256,
    newest_checkpoint,
    pin_version,
    promote_checkpoint,
    register_checkpoint,
    version_checkpoint,
)
from tacit.store.db import Database

VERSION = re.compile(r"^v[0-9]{6,12}$")


def to_spec(challenger: Challenger) -> ChallengerSpec:
    return ChallengerSpec(
        slot=challenger.slot,
        experiment_id=challenger.experiment_id,
        arm=challenger.arm,
        vw_args=challenger.vw_args,
        pinned_version=challenger.pinned_version,
        learn_from_all=challenger.learn_from_all,
    )


@lru_cache(maxsize=1024)
def assigned_spec(slot: str, experiment_id: str, arm: str, policy: str) -> ChallengerSpec:
    """The challenger behind a Rank-time assignment (learn_from_all does not matter for serving)."""
    return to_spec(Challenger(experiment_id, slot, arm, policy))


def spec_for(slot: str, assignment: ArmAssignment) -> ChallengerSpec:
    return assigned_spec(slot, assignment.experiment_id, assignment.arm, assignment.policy)


@dataclass(frozen=True)
class ArmModel:
    """The model behind an experiment arm now (for the experiment report)."""

    arm: str
    policy: str
    task: str
    version: str
    examples: int


def arm_models(db: Database, experiments: ExperimentService) -> Callable[[str], list[ArmModel]]:
    """Per arm of an experiment: the registered checkpoint it serves (serving processes load the
    newest within learner.reload_interval_seconds)."""

    def models(experiment_id: str) -> list[ArmModel]:
        definition = experiments.get(experiment_id).definition
        out = []
        with db.transaction() as session:
            for arm in definition.arms:
                challenger = Challenger(experiment_id, definition.slot, arm.name, arm.policy)
                if arm.policy == "bandit" or challenger.pinned_version:
                    task = bandit_task(definition.slot)
                    if challenger.pinned_version:
                        found = version_checkpoint(session, task, challenger.pinned_version)
                        checkpoint = found[0] if found is not None else None
                    else:
                        checkpoint = newest_checkpoint(session, task)
                elif challenger.vw_args:
                    task = challenger_task(experiment_id, arm.name)
                    checkpoint = newest_checkpoint(session, task)
                else:
                    out.append(ArmModel(arm.name, arm.policy, "", arm.policy, 0))
                    continue
                version = checkpoint.version if checkpoint is not None else "v000000"
                examples = checkpoint.examples if checkpoint is not None else 0
                out.append(ArmModel(arm.name, arm.policy, task, version, examples))
        return out

    return models


def challenger_source(experiments: ExperimentService) -> Callable[[], list[ChallengerSpec]]:
    """What the learner trains and serving processes load: the challengers of routing experiments."""

    def specs() -> list[ChallengerSpec]:
        return [to_spec(challenger) for challenger in experiments.challengers()]

    return specs


def policy_check(db: Database) -> Callable[[str, str], None]:
    """Checks a challenger policy at CreateExperiment; raises ValueError with a message naming the problem.

    bandit:<config> is validated exactly like slots.<name>.vw_args (namespaces, loop-breaking flags,
    then a VW workspace is built and discarded). model:<version> must name a registered checkpoint of
    the slot whose file matches its hash; it is then pinned, so retention never deletes it.
    """

    def check(slot: str, policy: str) -> None:
        if policy.startswith(BANDIT_CHALLENGER):
            try:
                check_workspace(policy.removeprefix(BANDIT_CHALLENGER))
            except BanditConfigError as error:
                raise ValueError(f"bandit:<config>: {error}") from None
            return
        version = policy.removeprefix(PINNED_MODEL)
        if not VERSION.match(version):
            raise ValueError("model:<version> must name a checkpoint version such as model:v000012")
        with db.transaction() as session:
            found = version_checkpoint(session, bandit_task(slot), version)
            if found is None:
                raise ValueError("model:<version> names no registered checkpoint of this slot")
            checkpoint, _ = found
            if not checkpoint.path.exists() or file_sha256(checkpoint.path) != checkpoint.sha256:
                raise ValueError("model:<version> names a checkpoint whose file is gone or fails its hash")
            pin_version(session, bandit_task(slot), version)

    return check


def promoter(models_dir: Path, configured_args: Callable[[str], str]) -> Callable[[Session, Challenger], str]:
    """The ship hook: registers the winner's checkpoint as the slot's next version, with its arguments.

    bandit:<config>: the challenger's newest checkpoint (what the learner saved at most one
    checkpoint interval ago) with <config>; model:<version>: that checkpoint with the arguments it
    was saved with. The learner adopts the new version at its next checkpoint and serving processes
    load it at their next reload; the registry row names the experiment, arm and source.
    """

    def promote(session: Session, winner: Challenger) -> str:
        if winner.vw_args:
            task = challenger_task(winner.experiment_id, winner.arm)
            source = newest_checkpoint(session, task)
            if source is None:  # never learned: its fresh workspace is what it served
                fresh = SlotModel(winner.vw_args)
                try:
                    source = register_checkpoint(session, fresh, task, models_dir)
                finally:
                    fresh.close()
            vw_args = winner.vw_args
        else:
            found = version_checkpoint(session, bandit_task(winner.slot), winner.pinned_version)
            if found is None:
                raise ModelIntegrityError(f"model {bandit_task(winner.slot)} {winner.pinned_version} is gone")
            source, vw_args = found
            vw_args = vw_args or configured_args(winner.slot)
        origin = {
            "experiment_id": winner.experiment_id,
            "arm": winner.arm,
            "policy": winner.policy,
            "task": source.task,
            "version": source.version,
        }
        promoted = promote_checkpoint(session, winner.slot, source, vw_args, models_dir, origin)
        return (
            f"slot {winner.slot} now serves {winner.policy}: checkpoint {source.task} {source.version} "
            f"registered as {promoted.task} {promoted.version} with vw_args '{vw_args}'"
        )

    return promote
