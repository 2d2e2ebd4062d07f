"""Typed configuration: a TOML file plus TACIT_* environment overrides.

A missing or invalid file stops the start with a clear error; there is no
silent fall-back to defaults when a file was named. Environment variables use
`__` between levels, e.g. `TACIT_SERVER__ADDRESS=0.0.0.0:50051` or
`TACIT_STORAGE__URL=postgresql+psycopg://...`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tacit.learning.bandit import BanditConfigError, check_workspace

DEFAULT_VW_ARGS = "--cb_explore_adf --squarecb -q UA"


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the setting."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    address: str = "127.0.0.1:50051"
    max_workers: int = Field(16, ge=1, le=256, description="threads per process")
    workers: int = Field(1, ge=1, le=64, description="server processes sharing the port (SO_REUSEPORT)")
    reuse_port: bool = False
    grace_seconds: float = Field(10.0, ge=0)
    metrics_port: int = Field(0, ge=0, le=65535, description="0 disables the Prometheus endpoint")
    metrics_sample_seconds: float = Field(
        15.0, gt=0, description="how often model version, learner lag and audit chain length are read"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    seed: int | None = Field(
        None,
        ge=0,
        lt=2**32,
        description="seeds Rank's sampling and VW's --random_seed so a replay of the same requests "
        "makes the same choices; None = from the OS",
    )
    max_streams: int = Field(
        4, ge=1, le=1024, description="streams served at once (own threads); more get RESOURCE_EXHAUSTED"
    )
    stream_idle_seconds: float = Field(
        30.0, gt=0, description="a stream whose client neither reads nor sends this long is cancelled"
    )
    max_concurrent_rpcs: int = Field(
        1024,
        ge=2,
        le=100_000,
        description="calls admitted at once, queued and thread-holding streams included; more get "
        "RESOURCE_EXHAUSTED at once instead of waiting in an unbounded queue",
    )


class StorageSettings(_Section):
    data_dir: Path = Path("tacit-data")
    url: str = Field("", description="SQLAlchemy URL; empty means SQLite in data_dir")
    connect_timeout_seconds: float = Field(5.0, gt=0, description="PostgreSQL connect timeout")
    statement_timeout_seconds: float = Field(
        15.0, gt=0, description="one statement (PostgreSQL) or lock wait (SQLite busy timeout) at most"
    )
    pool_timeout_seconds: float = Field(5.0, gt=0, description="wait for a pooled connection at most")
    probe_interval_seconds: float = Field(1.0, gt=0, description="how often health checks storage")
    probe_timeout_seconds: float = Field(2.0, gt=0, description="storage probe's connect/query bound")


class AuthSettings(_Section):
    enabled: bool = True
    tokens_file: Path | None = Field(None, description="default: <data_dir>/tokens.json")


class LimitSettings(_Section):
    max_candidates: int = Field(200, ge=1, le=10_000)
    max_string_chars: int = Field(2_048, ge=16)
    max_map_entries: int = Field(64, ge=1)
    max_events_per_request: int = Field(500, ge=1)
    max_id_chars: int = Field(128, ge=8)
    max_scrub_chars_per_request: int = Field(
        100_000, ge=1, description="characters one request may send to Presidio's full analysis"
    )
    max_clock_skew_seconds: float = Field(
        300.0, ge=0, description="how far a Reward's occurred_at may lie in the future or before its Rank"
    )
    max_page_slots: int = Field(8, ge=1, le=64, description="slots one RankMultiSlot may rank")


class DecisionLogSettings(_Section):
    flush_interval_ms: float = Field(5.0, gt=0)
    max_batch: int = Field(256, ge=1)


class LearnerSettings(_Section):
    enabled: bool = True
    poll_interval_seconds: float = Field(0.05, gt=0)
    checkpoint_interval_seconds: float = Field(1.0, gt=0)
    reload_interval_seconds: float = Field(0.5, gt=0)
    keep_checkpoints: int = Field(
        5, ge=1, description="bandit checkpoints kept per slot (rows and files); older ones are deleted"
    )
    checkpoint_grace_seconds: float = Field(
        60.0,
        ge=0,
        description="a checkpoint younger than this is never deleted: a serving process may be loading it",
    )


class ApprenticeSettings(_Section):
    """Apprentice mode of a slot (README "Apprentice mode"): serve the caller's baseline, learn, report."""

    epsilon: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="share of decisions drawn from the learned policy; the baseline gets 1 - epsilon "
        "(plus the learned policy's own weight on it). 0 = logging only",
    )
    switch_margin: float | None = Field(
        None,
        description="switch to online by itself once the learned policy's OPE lower bound exceeds the "
        "baseline's upper bound by this much (reward units); None = only on command",
    )
    min_decisions: int = Field(1_000, ge=20, description="no automatic switch on fewer apprentice decisions")
    window: int = Field(10_000, ge=20, description="the report reads the newest this many decisions")
    confidence: float = Field(0.95, gt=0.0, lt=1.0, description="of the reported intervals")
    check_interval_seconds: float = Field(60.0, gt=0, description="how often the automatic switch is checked")


class SlotSettings(_Section):
    vw_args: str = DEFAULT_VW_ARGS
    mode: Literal["online", "apprentice"] = Field(
        "online", description="the mode the slot starts in; a recorded mode change (SlotService) overrides it"
    )
    apprentice: ApprenticeSettings = ApprenticeSettings()
    reward_window_seconds: float = Field(3600.0, gt=0)
    default_reward: float = 0.0
    # Every reward of the slot (the default included) lies in [reward_min, reward_max]:
    # off-policy intervals are bounded by it (IPS: betting, SNIPS/DR: empirical-Bernstein).
    reward_min: float = 0.0
    reward_max: float = 1.0
    reward_aggregation: Literal["first", "last", "sum", "max"] = "first"
    max_candidates: int | None = Field(None, ge=1)
    auto_optimize_challenger: bool = Field(
        False,
        description="auto-optimize may start the configuration it proposes as a bandit:<args> challenger "
        "in a staged experiment on this slot (otherwise it only proposes)",
    )
    profile_features: list[str] = Field(
        default_factory=list,
        description="behavioural profile features (tacit.learning.features names) added to the context "
        "as profile.<name>; looked up from memory only, so Rank never waits for the database",
    )

    @field_validator("profile_features")
    @classmethod
    def _known_features(cls, names: list[str]) -> list[str]:
        from tacit.learning.features import FEATURE_NAMES

        unknown = sorted(set(names) - set(FEATURE_NAMES))
        if unknown:
            raise ValueError(f"unknown profile features {unknown}; known: {list(FEATURE_NAMES)}")
        return names

    @field_validator("vw_args")
    @classmethod
    def _valid_vw(cls, value: str) -> str:
        try:
            check_workspace(value)
            return value
        except BanditConfigError as error:
            raise ValueError(str(error)) from None

    @model_validator(mode="after")
    def _reward_range(self) -> SlotSettings:
        if not self.reward_min < self.reward_max:
            raise ValueError("reward_min must be below reward_max")
        if not self.reward_min <= self.default_reward <= self.reward_max:
            raise ValueError("default_reward must lie in [reward_min, reward_max]")
        return self

    @property
    def reward_range(self) -> tuple[float, float]:
        return self.reward_min, self.reward_max


class PrivacySettings(_Section):
    keys_file: Path | None = Field(None, description="default: <data_dir>/keys.json")
    ner_model: str | None = Field(None, description="spaCy package name or path; None = no NER")
    policies: dict[str, Any] = Field(default_factory=dict, description="overrides per payload kind")
    max_text_chars: int = Field(4_096, ge=64)
    retention_days: float | None = Field(None, gt=0, description="purge events older than this; None keeps")
    retention_interval_seconds: float = Field(3600.0, gt=0, description="how often the purge runs")
    erasure_model_rebuild: Literal["immediate", "nightly"] = Field(
        "immediate",
        description="when the learner rebuilds a slot model that learned from an erased subject: at "
        "its next checkpoint, or at erasure_rebuild_hour_utc (very large logs; the old model serves "
        "until then)",
    )
    erasure_rebuild_hour_utc: int = Field(3, ge=0, le=23, description="the nightly rebuild's hour (UTC)")


class ExperimentSettings(_Section):
    evaluate: bool = Field(True, description="run the rollout rules here; one process per deployment")
    evaluation_interval_seconds: float = Field(60.0, gt=0, description="how often the rules run")
    refresh_seconds: float = Field(1.0, gt=0, description="how stale Rank's view of experiments may be")
    conversion_window_seconds: float = Field(7 * 86_400.0, gt=0)
    sequential_tuning_n: float = Field(5_000.0, gt=0, description="total subjects where the CS is tightest")
    report_work_mem_mb: int = Field(
        128, ge=0, le=4096, description="PostgreSQL work_mem of report queries (0: the server's own)"
    )
    report_parallel_workers: int = Field(
        2, ge=-1, le=64, description="PostgreSQL parallel workers per report scan (-1: the server's own)"
    )
    report_statement_timeout_seconds: float = Field(
        120.0,
        ge=0,
        le=86_400,
        description="PostgreSQL statement timeout of report queries, instead of storage's (0: storage's)",
    )


class RetrainingSettings(_Section):
    """The in-server retraining scheduler (learner process only); see tacit.learning.retraining."""

    enabled: bool = Field(True, description="check, retrain and promote on a cadence in the learner process")
    tasks: list[Literal["engagement"]] = Field(default_factory=lambda: ["engagement"])  # type: ignore[arg-type]
    interval_seconds: float = Field(3600.0, gt=0, description="how often the checks run")
    max_model_age_days: float | None = Field(7.0, gt=0, description="retrain an older active version")
    psi_threshold: float = Field(0.2, gt=0, description="PSI at which a feature or the predictions drifted")
    recent_days: float = Field(7.0, gt=0, description="the drift check's current window")
    tolerance: float = Field(
        0.02, ge=0, description="promote when candidate RMSE <= active RMSE * (1 + tolerance) on the holdout"
    )
    training_days: float = Field(
        56.0, gt=0, description="the candidate learns from this span before the holdout"
    )
    holdout_days: float = Field(
        7.0, gt=0, description="the newest labelled snapshots of this span are the holdout"
    )
    label_window_days: float = Field(7.0, gt=0)
    snapshot_every_days: float = Field(2.0, gt=0)


class AutoOptimizeSettings(_Section):
    """Auto-optimize (tacit.server.auto_optimize): candidate VW configurations judged on a slot's log."""

    schedule: bool = Field(False, description="run on every slot each interval (learner process only)")
    interval_seconds: float = Field(86_400.0, gt=0, description="how often the scheduled runs happen")
    slots: list[str] = Field(default_factory=list, description="slots the schedule runs on; empty = all")
    grid: list[str] = Field(
        default_factory=list, description="candidate VW arguments; empty = the built-in grid"
    )
    margin: float = Field(
        0.01, ge=0, description="propose when best lower bound >= current lower bound + margin"
    )
    max_decisions: int = Field(20_000, ge=50, le=200_000, description="newest decisions with a final reward")
    warmup_fraction: float = Field(0.5, ge=0, lt=1, description="share of the log learned but not scored")
    stages: list[tuple[float, int]] = Field(
        default_factory=lambda: [(10.0, 1_000), (50.0, 2_000), (100.0, 5_000)],
        description="the challenger experiment's stages: (percent, minimum subjects per arm)",
    )
    primary_metric: str = "click_through"
    learn_from_all: bool = Field(
        True, description="the challenger learns from every decision of the slot, importance-weighted"
    )

    @field_validator("grid")
    @classmethod
    def _valid_grid(cls, grid: list[str]) -> list[str]:
        for index, value in enumerate(grid):
            try:
                check_workspace(value)
            except BanditConfigError as error:
                raise ValueError(f"grid[{index}]: {error}") from None
        return grid


class TrainingSettings(_Section):
    """`tacit train`'s classifier search and its MLflow tracking (README "Models")."""

    search: Literal["randomized", "optuna"] = Field("randomized", description="hyperparameter search")
    search_iterations: int = Field(4, ge=1, le=1000, description="trial budget per candidate")
    smote: Literal["never", "auto", "always"] = Field(
        "auto", description="also train each candidate with SMOTE; auto = when positives are under 10%"
    )
    mlflow_tracking_uri: str = Field("", description="log every training run here; empty = no MLflow")
    mlflow_experiment: str = Field("tacit", min_length=1, description="MLflow experiment of the runs")


class CatalogueSettings(_Section):
    """The content catalogue (README "Content catalogue")."""

    refresh_seconds: float = Field(
        1.0, gt=0, description="how stale a replica's in-memory catalogue may be for Rank (own writes: none)"
    )


class Settings(BaseSettings):
    """Everything `tacit serve` needs, validated at start-up."""

    model_config = SettingsConfigDict(env_prefix="TACIT_", env_nested_delimiter="__", extra="forbid")

    server: ServerSettings = ServerSettings()
    storage: StorageSettings = StorageSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitSettings = LimitSettings()
    decision_log: DecisionLogSettings = DecisionLogSettings()
    learner: LearnerSettings = LearnerSettings()
    privacy: PrivacySettings = PrivacySettings()
    experiments: ExperimentSettings = ExperimentSettings()
    retraining: RetrainingSettings = RetrainingSettings()
    training: TrainingSettings = TrainingSettings()
    auto_optimize: AutoOptimizeSettings = AutoOptimizeSettings()
    catalogue: CatalogueSettings = CatalogueSettings()
    slots: dict[str, SlotSettings] = Field(default_factory=lambda: {"home": SlotSettings()})

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file, which overrides the defaults.
        return (env_settings, init_settings)

    @property
    def database_url(self) -> str:
        from tacit.store.db import sqlite_url

        return self.storage.url or sqlite_url(self.storage.data_dir)

    @property
    def tokens_path(self) -> Path:
        return self.auth.tokens_file or self.storage.data_dir / "tokens.json"

    @property
    def keys_path(self) -> Path:
        return self.privacy.keys_file or self.storage.data_dir / "keys.json"

    @property
    def audit_keys_path(self) -> Path:
        """The audit chain's key file, beside the pseudonym key file."""
        from tacit.privacy.audit_keys import audit_keys_path

        return audit_keys_path(self.keys_path)

    def slot_limit(self, slot: str) -> int:
        configured = self.slots[slot].max_candidates
        return min(configured, self.limits.max_candidates) if configured else self.limits.max_candidates


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Reads the TOML file (if given), applies overrides and the environment, validates."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    for section, values in overrides.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    try:
        return Settings(**data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
