"""Early exit under load: MLCommons LoadGen scenarios and batching strategies.

A prepared multi-exit model (any backend) is served under a policy at an operating point by
one batching strategy (:mod:`eebench.serving.strategies`), as LoadGen's System Under Test
(:mod:`eebench.serving.session`) in the SingleStream, Server or Offline scenario
(:mod:`eebench.serving.loadgen`); the largest Server QPS that holds a latency bound is found by
:mod:`eebench.serving.search`, and the answers served are checked against the exit record's
offline decisions (:mod:`eebench.serving.check`). LoadGen is imported only when a test runs
(``pip install 'eebench[serving]'``).
"""

from eebench.serving.check import AnswerCheck, check_answers, offline_decisions
from eebench.serving.inbox import Inbox, Request
from eebench.serving.loadgen import (
    SCENARIOS,
    LoadgenResult,
    LoadgenUnavailable,
    ScenarioSettings,
    parse_detail_log,
    require_loadgen,
    run_test,
)
from eebench.serving.offline import OfflineCalibration, calibrate_offline
from eebench.serving.search import QpsSearch, find_max_qps
from eebench.serving.session import ServingRun, ServingSession
from eebench.serving.strategies import STRATEGIES, StrategyConfig, Worker, concat_states

__all__ = [
    "SCENARIOS",
    "STRATEGIES",
    "AnswerCheck",
    "Inbox",
    "LoadgenResult",
    "LoadgenUnavailable",
    "OfflineCalibration",
    "QpsSearch",
    "Request",
    "ScenarioSettings",
    "ServingRun",
    "ServingSession",
    "StrategyConfig",
    "Worker",
    "calibrate_offline",
    "check_answers",
    "concat_states",
    "find_max_qps",
    "offline_decisions",
    "parse_detail_log",
    "require_loadgen",
    "run_test",
]
