import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExperimentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPERIMENT_STATE_UNSPECIFIED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_DRAFT: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_RUNNING: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_PAUSED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_ROLLED_BACK: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_SHIPPED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_STOPPED: _ClassVar[ExperimentState]

class ToleranceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOLERANCE_KIND_UNSPECIFIED: _ClassVar[ToleranceKind]
    TOLERANCE_KIND_RELATIVE: _ClassVar[ToleranceKind]
    TOLERANCE_KIND_ABSOLUTE: _ClassVar[ToleranceKind]
EXPERIMENT_STATE_UNSPECIFIED: ExperimentState
EXPERIMENT_STATE_DRAFT: ExperimentState
EXPERIMENT_STATE_RUNNING: ExperimentState
EXPERIMENT_STATE_PAUSED: ExperimentState
EXPERIMENT_STATE_ROLLED_BACK: ExperimentState
EXPERIMENT_STATE_SHIPPED: ExperimentState
EXPERIMENT_STATE_STOPPED: ExperimentState
TOLERANCE_KIND_UNSPECIFIED: ToleranceKind
TOLERANCE_KIND_RELATIVE: ToleranceKind
TOLERANCE_KIND_ABSOLUTE: ToleranceKind

class Arm(_message.Message):
    __slots__ = ("name", "policy", "weight", "learn_from_all_decisions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    LEARN_FROM_ALL_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    policy: str
    weight: float
    learn_from_all_decisions: bool
    def __init__(self, name: _Optional[str] = ..., policy: _Optional[str] = ..., weight: _Optional[float] = ..., learn_from_all_decisions: _Optional[bool] = ...) -> None: ...

class Stage(_message.Message):
    __slots__ = ("percent", "min_sample", "min_duration_seconds")
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    MIN_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    MIN_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    percent: float
    min_sample: int
    min_duration_seconds: int
    def __init__(self, percent: _Optional[float] = ..., min_sample: _Optional[int] = ..., min_duration_seconds: _Optional[int] = ...) -> None: ...

class Guardrail(_message.Message):
    __slots__ = ("metric", "tolerance", "tolerance_kind")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_KIND_FIELD_NUMBER: _ClassVar[int]
    metric: str
    tolerance: float
    tolerance_kind: ToleranceKind
    def __init__(self, metric: _Optional[str] = ..., tolerance: _Optional[float] = ..., tolerance_kind: _Optional[_Union[ToleranceKind, str]] = ...) -> None: ...

class Covariate(_message.Message):
    __slots__ = ("metric", "lookback_seconds")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    LOOKBACK_SECONDS_FIELD_NUMBER: _ClassVar[int]
    metric: str
    lookback_seconds: int
    def __init__(self, metric: _Optional[str] = ..., lookback_seconds: _Optional[int] = ...) -> None: ...

class Experiment(_message.Message):
    __slots__ = ("name", "slot", "arms", "primary_metric", "secondary_metrics", "guardrails", "stages", "state", "stage_index", "auto_advance", "create_time", "control_arm", "update_time", "stage_start_time", "exposure_percent", "traffic_start", "traffic_end", "covariates")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_METRIC_FIELD_NUMBER: _ClassVar[int]
    SECONDARY_METRICS_FIELD_NUMBER: _ClassVar[int]
    GUARDRAILS_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    AUTO_ADVANCE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CONTROL_ARM_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    STAGE_START_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPOSURE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_START_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_END_FIELD_NUMBER: _ClassVar[int]
    COVARIATES_FIELD_NUMBER: _ClassVar[int]
    name: str
    slot: str
    arms: _containers.RepeatedCompositeFieldContainer[Arm]
    primary_metric: str
    secondary_metrics: _containers.RepeatedScalarFieldContainer[str]
    guardrails: _containers.RepeatedCompositeFieldContainer[Guardrail]
    stages: _containers.RepeatedCompositeFieldContainer[Stage]
    state: ExperimentState
    stage_index: int
    auto_advance: bool
    create_time: _timestamp_pb2.Timestamp
    control_arm: str
    update_time: _timestamp_pb2.Timestamp
    stage_start_time: _timestamp_pb2.Timestamp
    exposure_percent: float
    traffic_start: float
    traffic_end: float
    covariates: _containers.RepeatedCompositeFieldContainer[Covariate]
    def __init__(self, name: _Optional[str] = ..., slot: _Optional[str] = ..., arms: _Optional[_Iterable[_Union[Arm, _Mapping]]] = ..., primary_metric: _Optional[str] = ..., secondary_metrics: _Optional[_Iterable[str]] = ..., guardrails: _Optional[_Iterable[_Union[Guardrail, _Mapping]]] = ..., stages: _Optional[_Iterable[_Union[Stage, _Mapping]]] = ..., state: _Optional[_Union[ExperimentState, str]] = ..., stage_index: _Optional[int] = ..., auto_advance: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., control_arm: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stage_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exposure_percent: _Optional[float] = ..., traffic_start: _Optional[float] = ..., traffic_end: _Optional[float] = ..., covariates: _Optional[_Iterable[_Union[Covariate, _Mapping]]] = ...) -> None: ...

class CreateExperimentRequest(_message.Message):
    __slots__ = ("experiment_id", "experiment", "request_id")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    experiment: Experiment
    request_id: str
    def __init__(self, experiment_id: _Optional[str] = ..., experiment: _Optional[_Union[Experiment, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetExperimentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListExperimentsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "slot")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    slot: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., slot: _Optional[str] = ...) -> None: ...

class ListExperimentsResponse(_message.Message):
    __slots__ = ("experiments", "next_page_token")
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    experiments: _containers.RepeatedCompositeFieldContainer[Experiment]
    next_page_token: str
    def __init__(self, experiments: _Optional[_Iterable[_Union[Experiment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ExperimentActionRequest(_message.Message):
    __slots__ = ("name", "reason", "request_id", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    request_id: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class GetExperimentReportRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class MetricResult(_message.Message):
    __slots__ = ("metric", "arm", "control_mean", "treatment_mean", "relative_lift", "ci_low", "ci_high", "p_value", "always_valid_p_value", "guardrail", "harmed", "role", "absolute_lift", "absolute_ci_low", "absolute_ci_high", "always_valid_ci_low", "always_valid_ci_high", "adjusted_p_value", "cleared", "control_count", "treatment_count", "status", "absolute_p_value", "cuped", "cuped_theta", "variance_reduction", "unadjusted_relative_lift", "unadjusted_ci_low", "unadjusted_ci_high", "unadjusted_p_value", "unadjusted_absolute_lift", "unadjusted_absolute_ci_low", "unadjusted_absolute_ci_high", "unadjusted_absolute_p_value")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    CONTROL_MEAN_FIELD_NUMBER: _ClassVar[int]
    TREATMENT_MEAN_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_LIFT_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    ALWAYS_VALID_P_VALUE_FIELD_NUMBER: _ClassVar[int]
    GUARDRAIL_FIELD_NUMBER: _ClassVar[int]
    HARMED_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ABSOLUTE_LIFT_FIELD_NUMBER: _ClassVar[int]
    ABSOLUTE_CI_LOW_FIELD_NUMBER: _ClassVar[int]
    ABSOLUTE_CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    ALWAYS_VALID_CI_LOW_FIELD_NUMBER: _ClassVar[int]
    ALWAYS_VALID_CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    ADJUSTED_P_VALUE_FIELD_NUMBER: _ClassVar[int]
    CLEARED_FIELD_NUMBER: _ClassVar[int]
    CONTROL_COUNT_FIELD_NUMBER: _ClassVar[int]
    TREATMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ABSOLUTE_P_VALUE_FIELD_NUMBER: _ClassVar[int]
    CUPED_FIELD_NUMBER: _ClassVar[int]
    CUPED_THETA_FIELD_NUMBER: _ClassVar[int]
    VARIANCE_REDUCTION_FIELD_NUMBER: _ClassVar[int]
    UNADJUSTED_RELATIVE_LIFT_FIELD_NUMBER: _ClassVar[int]
    UNADJUSTED_CI_LOW_FIELD_NUMBER: _ClassVar[int]
    UNADJUSTED_CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    UNADJUSTED_P_VALUE_FIELD_NUMBER: _ClassVar[int]
    UNADJUSTED_ABSOLUTE_LIFT_FIELD_NUMBER: _ClassVar[int]
    UNADJUSTED_ABSOLUTE_CI_LOW_FIELD_NUMBER: _ClassVar[int]
    UNADJUSTED_ABSOLUTE_CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    UNADJUSTED_ABSOLUTE_P_VALUE_FIELD_NUMBER: _ClassVar[int]
    metric: str
    arm: str
    control_mean: float
    treatment_mean: float
    relative_lift: float
    ci_low: float
    ci_high: float
    p_value: float
    always_valid_p_value: float
    guardrail: bool
    harmed: bool
    role: str
    absolute_lift: float
    absolute_ci_low: float
    absolute_ci_high: float
    always_valid_ci_low: float
    always_valid_ci_high: float
    adjusted_p_value: float
    cleared: bool
    control_count: int
    treatment_count: int
    status: str
    absolute_p_value: float
    cuped: bool
    cuped_theta: float
    variance_reduction: float
    unadjusted_relative_lift: float
    unadjusted_ci_low: float
    unadjusted_ci_high: float
    unadjusted_p_value: float
    unadjusted_absolute_lift: float
    unadjusted_absolute_ci_low: float
    unadjusted_absolute_ci_high: float
    unadjusted_absolute_p_value: float
    def __init__(self, metric: _Optional[str] = ..., arm: _Optional[str] = ..., control_mean: _Optional[float] = ..., treatment_mean: _Optional[float] = ..., relative_lift: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., p_value: _Optional[float] = ..., always_valid_p_value: _Optional[float] = ..., guardrail: _Optional[bool] = ..., harmed: _Optional[bool] = ..., role: _Optional[str] = ..., absolute_lift: _Optional[float] = ..., absolute_ci_low: _Optional[float] = ..., absolute_ci_high: _Optional[float] = ..., always_valid_ci_low: _Optional[float] = ..., always_valid_ci_high: _Optional[float] = ..., adjusted_p_value: _Optional[float] = ..., cleared: _Optional[bool] = ..., control_count: _Optional[int] = ..., treatment_count: _Optional[int] = ..., status: _Optional[str] = ..., absolute_p_value: _Optional[float] = ..., cuped: _Optional[bool] = ..., cuped_theta: _Optional[float] = ..., variance_reduction: _Optional[float] = ..., unadjusted_relative_lift: _Optional[float] = ..., unadjusted_ci_low: _Optional[float] = ..., unadjusted_ci_high: _Optional[float] = ..., unadjusted_p_value: _Optional[float] = ..., unadjusted_absolute_lift: _Optional[float] = ..., unadjusted_absolute_ci_low: _Optional[float] = ..., unadjusted_absolute_ci_high: _Optional[float] = ..., unadjusted_absolute_p_value: _Optional[float] = ...) -> None: ...

class ArmCount(_message.Message):
    __slots__ = ("arm", "subjects")
    ARM_FIELD_NUMBER: _ClassVar[int]
    SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    arm: str
    subjects: int
    def __init__(self, arm: _Optional[str] = ..., subjects: _Optional[int] = ...) -> None: ...

class ExperimentReport(_message.Message):
    __slots__ = ("name", "metrics", "srm_p_value", "recommended_action", "summary", "stage_index", "exposure_percent", "arm_counts", "reasons", "evaluate_time", "state", "arm_models")
    NAME_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    SRM_P_VALUE_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDED_ACTION_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    STAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    EXPOSURE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    ARM_COUNTS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    EVALUATE_TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ARM_MODELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    metrics: _containers.RepeatedCompositeFieldContainer[MetricResult]
    srm_p_value: float
    recommended_action: str
    summary: str
    stage_index: int
    exposure_percent: float
    arm_counts: _containers.RepeatedCompositeFieldContainer[ArmCount]
    reasons: _containers.RepeatedScalarFieldContainer[str]
    evaluate_time: _timestamp_pb2.Timestamp
    state: ExperimentState
    arm_models: _containers.RepeatedCompositeFieldContainer[ArmModel]
    def __init__(self, name: _Optional[str] = ..., metrics: _Optional[_Iterable[_Union[MetricResult, _Mapping]]] = ..., srm_p_value: _Optional[float] = ..., recommended_action: _Optional[str] = ..., summary: _Optional[str] = ..., stage_index: _Optional[int] = ..., exposure_percent: _Optional[float] = ..., arm_counts: _Optional[_Iterable[_Union[ArmCount, _Mapping]]] = ..., reasons: _Optional[_Iterable[str]] = ..., evaluate_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[ExperimentState, str]] = ..., arm_models: _Optional[_Iterable[_Union[ArmModel, _Mapping]]] = ...) -> None: ...

class ArmModel(_message.Message):
    __slots__ = ("arm", "policy", "task", "version", "examples")
    ARM_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    arm: str
    policy: str
    task: str
    version: str
    examples: int
    def __init__(self, arm: _Optional[str] = ..., policy: _Optional[str] = ..., task: _Optional[str] = ..., version: _Optional[str] = ..., examples: _Optional[int] = ...) -> None: ...

class ListExperimentChangesRequest(_message.Message):
    __slots__ = ("name", "page_size", "page_token", "include_evaluations")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_EVALUATIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    page_size: int
    page_token: str
    include_evaluations: bool
    def __init__(self, name: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_evaluations: _Optional[bool] = ...) -> None: ...

class ExperimentChange(_message.Message):
    __slots__ = ("sequence", "change_time", "actor", "action", "from_state", "to_state", "from_stage_index", "to_stage_index", "reason", "report")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    FROM_STAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    TO_STAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    change_time: _timestamp_pb2.Timestamp
    actor: str
    action: str
    from_state: ExperimentState
    to_state: ExperimentState
    from_stage_index: int
    to_stage_index: int
    reason: str
    report: ExperimentReport
    def __init__(self, sequence: _Optional[int] = ..., change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., from_state: _Optional[_Union[ExperimentState, str]] = ..., to_state: _Optional[_Union[ExperimentState, str]] = ..., from_stage_index: _Optional[int] = ..., to_stage_index: _Optional[int] = ..., reason: _Optional[str] = ..., report: _Optional[_Union[ExperimentReport, _Mapping]] = ...) -> None: ...

class ListExperimentChangesResponse(_message.Message):
    __slots__ = ("changes", "next_page_token")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[ExperimentChange]
    next_page_token: str
    def __init__(self, changes: _Optional[_Iterable[_Union[ExperimentChange, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
