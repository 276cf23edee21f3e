"""Exit policies: confidence measures, decision functions, baselines and target exit distributions.

Importing this package registers every policy and confidence measure.
"""

from eebench.policies.base import (
    ExitDecider,
    ExitView,
    LogitsView,
    NotFittedError,
    Policy,
    PolicyError,
)
from eebench.policies.baselines import AggregationPolicy, FinalOnlyPolicy, OraclePolicy
from eebench.policies.bolukbasi import BolukbasiEarlyExitPolicy
from eebench.policies.confidence import (
    CONFIDENCE,
    NonFiniteLogitsError,
    check_finite,
    confidence,
    entropy_confidence,
    list_confidence_measures,
    log_softmax64,
    max_softmax,
    predictions,
    score_margin,
)
from eebench.policies.dynamic_routing import (
    OptimisticCriticPolicy,
    PragmaticCriticPolicy,
    RoutingActorPolicy,
)
from eebench.policies.epnet import EPNetPolicy
from eebench.policies.fallback import FALLBACKS, most_confident_predictions
from eebench.policies.gate import (
    GATE_FEATURES,
    CrossFittedGate,
    LearnedGatePolicy,
    cross_fitting_folds,
    gate_features,
)
from eebench.policies.gate_classification import (
    CrossFittedGateClassification,
    GateClassificationPolicy,
)
from eebench.policies.guan import GuanCascadePolicy
from eebench.policies.idk import (
    IDKCascadePolicy,
    idk_objective,
    idk_thresholds,
    idk_thresholds_for_accuracy,
)
from eebench.policies.patience import PatiencePolicy, patience_counters
from eebench.policies.registry import (
    POLICIES,
    create_policy,
    list_policies,
    policies_table,
    register_policy,
)
from eebench.policies.targets import (
    MSDNET_Q_VALUES,
    ROUNDINGS,
    check_distribution,
    exit_counts_for_distributions,
    geometric_exit_distribution,
    msdnet_exit_distribution,
    thresholds_for_exit_distribution,
    thresholds_for_exit_distributions,
)
from eebench.policies.threshold import ThresholdPolicy
from eebench.policies.tradeoff import CrossFittedTradeoff, TradeoffPolicy

__all__ = [
    "FALLBACKS",
    "MSDNET_Q_VALUES",
    "ROUNDINGS",
    "exit_counts_for_distributions",
    "most_confident_predictions",
    "msdnet_exit_distribution",
    "thresholds_for_exit_distributions",
    "CONFIDENCE",
    "GATE_FEATURES",
    "POLICIES",
    "AggregationPolicy",
    "BolukbasiEarlyExitPolicy",
    "CrossFittedTradeoff",
    "EPNetPolicy",
    "GuanCascadePolicy",
    "OptimisticCriticPolicy",
    "PragmaticCriticPolicy",
    "RoutingActorPolicy",
    "TradeoffPolicy",
    "CrossFittedGate",
    "CrossFittedGateClassification",
    "GateClassificationPolicy",
    "ExitDecider",
    "ExitView",
    "FinalOnlyPolicy",
    "IDKCascadePolicy",
    "idk_objective",
    "idk_thresholds",
    "idk_thresholds_for_accuracy",
    "LearnedGatePolicy",
    "LogitsView",
    "NonFiniteLogitsError",
    "NotFittedError",
    "OraclePolicy",
    "PatiencePolicy",
    "Policy",
    "PolicyError",
    "ThresholdPolicy",
    "check_distribution",
    "check_finite",
    "confidence",
    "create_policy",
    "cross_fitting_folds",
    "entropy_confidence",
    "gate_features",
    "geometric_exit_distribution",
    "list_confidence_measures",
    "list_policies",
    "log_softmax64",
    "max_softmax",
    "patience_counters",
    "policies_table",
    "predictions",
    "register_policy",
    "score_margin",
    "thresholds_for_exit_distribution",
]
