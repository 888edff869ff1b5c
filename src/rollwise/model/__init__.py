"""Value types of rollwise: enums, policies, the deployment-name rule, cycle views and decisions. No I/O.

Every other package imports from here; this package imports only the standard library and pydantic.
"""

from rollwise.model.enums import (
    CapacityFallback,
    Health,
    Lifecycle,
    Mode,
    OnDeadline,
    RollbackReason,
    RouteStatus,
    StrategyName,
    SubStep,
    Traffic,
)
from rollwise.model.errors import RollwiseError, ValidationFailed
from rollwise.model.names import (
    DEPLOYMENT_NAME_MAX,
    DEPLOYMENT_NAME_PATTERN,
    check_deployment_name,
    deployment_name_problem,
)
from rollwise.model.policy import (
    AnalysisSpec,
    CanaryStep,
    MetricSpec,
    PauseSpec,
    Policy,
    field_path,
    format_validation_error,
    parse_policy,
)
from rollwise.model.views import (
    NO_ANALYSIS,
    UNLIMITED,
    AnalysisCounts,
    CapacityView,
    Decision,
    DeploymentView,
    RouteCreate,
    RouteView,
    TrafficChange,
    is_ready_state,
)

__all__ = [
    "DEPLOYMENT_NAME_MAX",
    "DEPLOYMENT_NAME_PATTERN",
    "NO_ANALYSIS",
    "UNLIMITED",
    "AnalysisCounts",
    "AnalysisSpec",
    "CanaryStep",
    "CapacityFallback",
    "CapacityView",
    "Decision",
    "DeploymentView",
    "Health",
    "Lifecycle",
    "MetricSpec",
    "Mode",
    "OnDeadline",
    "PauseSpec",
    "Policy",
    "RollbackReason",
    "RollwiseError",
    "RouteCreate",
    "RouteStatus",
    "RouteView",
    "StrategyName",
    "SubStep",
    "Traffic",
    "TrafficChange",
    "ValidationFailed",
    "check_deployment_name",
    "deployment_name_problem",
    "field_path",
    "format_validation_error",
    "is_ready_state",
    "parse_policy",
]
