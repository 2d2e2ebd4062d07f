import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Model(_message.Message):
    __slots__ = ("name", "task", "version", "active", "metrics", "create_time", "needs_retraining", "examples", "new_examples", "pending_decisions", "learning_lag_seconds", "vw_args", "promoted_from", "installed_by", "source_version", "source_sha256")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    NEEDS_RETRAINING_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    NEW_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    PENDING_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VW_ARGS_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_FROM_FIELD_NUMBER: _ClassVar[int]
    INSTALLED_BY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    task: str
    version: str
    active: bool
    metrics: _containers.ScalarMap[str, float]
    create_time: _timestamp_pb2.Timestamp
    needs_retraining: bool
    examples: int
    new_examples: int
    pending_decisions: int
    learning_lag_seconds: float
    vw_args: str
    promoted_from: str
    installed_by: str
    source_version: str
    source_sha256: str
    def __init__(self, name: _Optional[str] = ..., task: _Optional[str] = ..., version: _Optional[str] = ..., active: _Optional[bool] = ..., metrics: _Optional[_Mapping[str, float]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., needs_retraining: _Optional[bool] = ..., examples: _Optional[int] = ..., new_examples: _Optional[int] = ..., pending_decisions: _Optional[int] = ..., learning_lag_seconds: _Optional[float] = ..., vw_args: _Optional[str] = ..., promoted_from: _Optional[str] = ..., installed_by: _Optional[str] = ..., source_version: _Optional[str] = ..., source_sha256: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("task", "page_size", "page_token")
    TASK_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    task: str
    page_size: int
    page_token: str
    def __init__(self, task: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "next_page_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    next_page_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class EvaluatePoliciesRequest(_message.Message):
    __slots__ = ("slot", "policies")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    slot: str
    policies: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, slot: _Optional[str] = ..., policies: _Optional[_Iterable[str]] = ...) -> None: ...

class PolicyEstimate(_message.Message):
    __slots__ = ("policy", "estimator", "value", "ci_low", "ci_high", "n", "status", "effective_sample_size", "matched", "matched_rewards", "interval")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    ESTIMATOR_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_SAMPLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    MATCHED_REWARDS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    policy: str
    estimator: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    status: str
    effective_sample_size: float
    matched: int
    matched_rewards: int
    interval: str
    def __init__(self, policy: _Optional[str] = ..., estimator: _Optional[str] = ..., value: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., n: _Optional[int] = ..., status: _Optional[str] = ..., effective_sample_size: _Optional[float] = ..., matched: _Optional[int] = ..., matched_rewards: _Optional[int] = ..., interval: _Optional[str] = ...) -> None: ...

class EvaluatePoliciesResponse(_message.Message):
    __slots__ = ("estimates",)
    ESTIMATES_FIELD_NUMBER: _ClassVar[int]
    estimates: _containers.RepeatedCompositeFieldContainer[PolicyEstimate]
    def __init__(self, estimates: _Optional[_Iterable[_Union[PolicyEstimate, _Mapping]]] = ...) -> None: ...

class GetDriftReportRequest(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: str
    def __init__(self, task: _Optional[str] = ...) -> None: ...

class FeatureDrift(_message.Message):
    __slots__ = ("feature", "psi")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    feature: str
    psi: float
    def __init__(self, feature: _Optional[str] = ..., psi: _Optional[float] = ...) -> None: ...

class RewardRateDrift(_message.Message):
    __slots__ = ("reference_rate", "current_rate", "reference_count", "current_count", "z", "p_value", "drifted", "alpha", "status")
    REFERENCE_RATE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_RATE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    Z_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    reference_rate: float
    current_rate: float
    reference_count: int
    current_count: int
    z: float
    p_value: float
    drifted: bool
    alpha: float
    status: str
    def __init__(self, reference_rate: _Optional[float] = ..., current_rate: _Optional[float] = ..., reference_count: _Optional[int] = ..., current_count: _Optional[int] = ..., z: _Optional[float] = ..., p_value: _Optional[float] = ..., drifted: _Optional[bool] = ..., alpha: _Optional[float] = ..., status: _Optional[str] = ...) -> None: ...

class DriftReport(_message.Message):
    __slots__ = ("task", "features", "stale", "prediction_psi", "threshold", "drifted_features", "reward_rate_drift", "reference_start_time", "reference_end_time", "current_start_time", "current_end_time", "reference_count", "current_count", "model_version")
    TASK_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_PSI_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_FEATURES_FIELD_NUMBER: _ClassVar[int]
    REWARD_RATE_DRIFT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_START_TIME_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_END_TIME_FIELD_NUMBER: _ClassVar[int]
    CURRENT_START_TIME_FIELD_NUMBER: _ClassVar[int]
    CURRENT_END_TIME_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    task: str
    features: _containers.RepeatedCompositeFieldContainer[FeatureDrift]
    stale: bool
    prediction_psi: float
    threshold: float
    drifted_features: _containers.RepeatedScalarFieldContainer[str]
    reward_rate_drift: RewardRateDrift
    reference_start_time: _timestamp_pb2.Timestamp
    reference_end_time: _timestamp_pb2.Timestamp
    current_start_time: _timestamp_pb2.Timestamp
    current_end_time: _timestamp_pb2.Timestamp
    reference_count: int
    current_count: int
    model_version: str
    def __init__(self, task: _Optional[str] = ..., features: _Optional[_Iterable[_Union[FeatureDrift, _Mapping]]] = ..., stale: _Optional[bool] = ..., prediction_psi: _Optional[float] = ..., threshold: _Optional[float] = ..., drifted_features: _Optional[_Iterable[str]] = ..., reward_rate_drift: _Optional[_Union[RewardRateDrift, _Mapping]] = ..., reference_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reference_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., current_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., current_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reference_count: _Optional[int] = ..., current_count: _Optional[int] = ..., model_version: _Optional[str] = ...) -> None: ...

class RetrainingStep(_message.Message):
    __slots__ = ("name", "time", "figures", "note")
    class FiguresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    FIGURES_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    name: str
    time: _timestamp_pb2.Timestamp
    figures: _containers.ScalarMap[str, float]
    note: str
    def __init__(self, name: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., figures: _Optional[_Mapping[str, float]] = ..., note: _Optional[str] = ...) -> None: ...

class RetrainingRun(_message.Message):
    __slots__ = ("id", "task", "start_time", "end_time", "outcome", "triggers", "active_version", "candidate_version", "metric", "active_score", "candidate_score", "tolerance", "holdout_rows", "steps")
    ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    TRIGGERS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SCORE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_SCORE_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_ROWS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    id: int
    task: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    outcome: str
    triggers: _containers.RepeatedScalarFieldContainer[str]
    active_version: str
    candidate_version: str
    metric: str
    active_score: float
    candidate_score: float
    tolerance: float
    holdout_rows: int
    steps: _containers.RepeatedCompositeFieldContainer[RetrainingStep]
    def __init__(self, id: _Optional[int] = ..., task: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., outcome: _Optional[str] = ..., triggers: _Optional[_Iterable[str]] = ..., active_version: _Optional[str] = ..., candidate_version: _Optional[str] = ..., metric: _Optional[str] = ..., active_score: _Optional[float] = ..., candidate_score: _Optional[float] = ..., tolerance: _Optional[float] = ..., holdout_rows: _Optional[int] = ..., steps: _Optional[_Iterable[_Union[RetrainingStep, _Mapping]]] = ...) -> None: ...

class ListRetrainingRunsRequest(_message.Message):
    __slots__ = ("task", "page_size", "page_token")
    TASK_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    task: str
    page_size: int
    page_token: str
    def __init__(self, task: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRetrainingRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RetrainingRun]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[RetrainingRun, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AutoOptimizeRequest(_message.Message):
    __slots__ = ("slot", "candidates", "dry_run")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    slot: str
    candidates: _containers.RepeatedScalarFieldContainer[str]
    dry_run: bool
    def __init__(self, slot: _Optional[str] = ..., candidates: _Optional[_Iterable[str]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class AutoOptimizeCandidate(_message.Message):
    __slots__ = ("vw_args", "current", "estimator", "value", "ci_low", "ci_high", "n", "status", "effective_sample_size", "matched", "matched_rewards")
    VW_ARGS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    ESTIMATOR_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_SAMPLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    MATCHED_REWARDS_FIELD_NUMBER: _ClassVar[int]
    vw_args: str
    current: bool
    estimator: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    status: str
    effective_sample_size: float
    matched: int
    matched_rewards: int
    def __init__(self, vw_args: _Optional[str] = ..., current: _Optional[bool] = ..., estimator: _Optional[str] = ..., value: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., n: _Optional[int] = ..., status: _Optional[str] = ..., effective_sample_size: _Optional[float] = ..., matched: _Optional[int] = ..., matched_rewards: _Optional[int] = ...) -> None: ...

class AutoOptimizeRun(_message.Message):
    __slots__ = ("id", "slot", "trigger", "start_time", "end_time", "outcome", "current_args", "best_args", "margin", "decisions", "candidates", "experiment_id", "note")
    ID_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    CURRENT_ARGS_FIELD_NUMBER: _ClassVar[int]
    BEST_ARGS_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    id: int
    slot: str
    trigger: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    outcome: str
    current_args: str
    best_args: str
    margin: float
    decisions: int
    candidates: _containers.RepeatedCompositeFieldContainer[AutoOptimizeCandidate]
    experiment_id: str
    note: str
    def __init__(self, id: _Optional[int] = ..., slot: _Optional[str] = ..., trigger: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., outcome: _Optional[str] = ..., current_args: _Optional[str] = ..., best_args: _Optional[str] = ..., margin: _Optional[float] = ..., decisions: _Optional[int] = ..., candidates: _Optional[_Iterable[_Union[AutoOptimizeCandidate, _Mapping]]] = ..., experiment_id: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class AutoOptimizeListRunsRequest(_message.Message):
    __slots__ = ("slot", "page_size", "page_token")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    slot: str
    page_size: int
    page_token: str
    def __init__(self, slot: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class AutoOptimizeListRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[AutoOptimizeRun]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[AutoOptimizeRun, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ExplainModelRequest(_message.Message):
    __slots__ = ("slot", "top_n", "sample_size")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    slot: str
    top_n: int
    sample_size: int
    def __init__(self, slot: _Optional[str] = ..., top_n: _Optional[int] = ..., sample_size: _Optional[int] = ...) -> None: ...

class ExplainImportance(_message.Message):
    __slots__ = ("name", "importance", "weight", "occurrences")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMPORTANCE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    OCCURRENCES_FIELD_NUMBER: _ClassVar[int]
    name: str
    importance: float
    weight: float
    occurrences: int
    def __init__(self, name: _Optional[str] = ..., importance: _Optional[float] = ..., weight: _Optional[float] = ..., occurrences: _Optional[int] = ...) -> None: ...

class ExplainModelResponse(_message.Message):
    __slots__ = ("slot", "model_version", "sample_decisions", "sample_rows", "namespaces", "features", "interactions", "terms")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_ROWS_FIELD_NUMBER: _ClassVar[int]
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    INTERACTIONS_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    slot: str
    model_version: str
    sample_decisions: int
    sample_rows: int
    namespaces: _containers.RepeatedCompositeFieldContainer[ExplainImportance]
    features: _containers.RepeatedCompositeFieldContainer[ExplainImportance]
    interactions: _containers.RepeatedCompositeFieldContainer[ExplainImportance]
    terms: _containers.RepeatedCompositeFieldContainer[ExplainImportance]
    def __init__(self, slot: _Optional[str] = ..., model_version: _Optional[str] = ..., sample_decisions: _Optional[int] = ..., sample_rows: _Optional[int] = ..., namespaces: _Optional[_Iterable[_Union[ExplainImportance, _Mapping]]] = ..., features: _Optional[_Iterable[_Union[ExplainImportance, _Mapping]]] = ..., interactions: _Optional[_Iterable[_Union[ExplainImportance, _Mapping]]] = ..., terms: _Optional[_Iterable[_Union[ExplainImportance, _Mapping]]] = ...) -> None: ...

class ExplainDecisionRequest(_message.Message):
    __slots__ = ("event_id", "top_n")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    top_n: int
    def __init__(self, event_id: _Optional[str] = ..., top_n: _Optional[int] = ...) -> None: ...

class ExplainContribution(_message.Message):
    __slots__ = ("name", "value", "weight", "contribution")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    weight: float
    contribution: float
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ..., weight: _Optional[float] = ..., contribution: _Optional[float] = ...) -> None: ...

class ExplainDecisionResponse(_message.Message):
    __slots__ = ("slot", "decision_model_version", "model_version", "chosen_index", "chosen_probability", "candidates", "predicted_reward", "contributions")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    DECISION_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_INDEX_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_REWARD_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    slot: str
    decision_model_version: str
    model_version: str
    chosen_index: int
    chosen_probability: float
    candidates: int
    predicted_reward: float
    contributions: _containers.RepeatedCompositeFieldContainer[ExplainContribution]
    def __init__(self, slot: _Optional[str] = ..., decision_model_version: _Optional[str] = ..., model_version: _Optional[str] = ..., chosen_index: _Optional[int] = ..., chosen_probability: _Optional[float] = ..., candidates: _Optional[int] = ..., predicted_reward: _Optional[float] = ..., contributions: _Optional[_Iterable[_Union[ExplainContribution, _Mapping]]] = ...) -> None: ...

class ExportModelRequest(_message.Message):
    __slots__ = ("slot", "version")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    slot: str
    version: str
    def __init__(self, slot: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ExportModelResponse(_message.Message):
    __slots__ = ("bundle", "sha256", "task", "version")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    bundle: bytes
    sha256: str
    task: str
    version: str
    def __init__(self, bundle: _Optional[bytes] = ..., sha256: _Optional[str] = ..., task: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ImportModelRequest(_message.Message):
    __slots__ = ("slot", "bundle", "sha256", "request_id")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    slot: str
    bundle: bytes
    sha256: str
    request_id: str
    def __init__(self, slot: _Optional[str] = ..., bundle: _Optional[bytes] = ..., sha256: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ImportModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class ResetModelRequest(_message.Message):
    __slots__ = ("slot", "request_id")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    slot: str
    request_id: str
    def __init__(self, slot: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ResetModelResponse(_message.Message):
    __slots__ = ("model", "previous_version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    model: Model
    previous_version: str
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ..., previous_version: _Optional[str] = ...) -> None: ...
