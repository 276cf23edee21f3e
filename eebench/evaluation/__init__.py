"""Evaluation: the exit record, vectorised operating points, overthinking, calibration, Pareto fronts.

Record once (:func:`record_exits`), then evaluate every policy, threshold,
calibration and budget on the record and the per-exit cost vectors.
"""

from eebench.evaluation.budgeted_batch import (
    BudgetedBatchSweep,
    budgeted_batch_distributions,
    budgeted_batch_sweep,
)
from eebench.evaluation.calibration import (
    Calibration,
    CalibrationError,
    calibrate_accuracy_drop,
    calibrate_budget,
    calibrate_budgeted_batch,
    calibrate_exit_distribution,
    calibrate_idk,
    calibration_table,
)
from eebench.evaluation.cost_vector import CostVector, check_costs
from eebench.evaluation.operating_points import OperatingPoints, evaluate, operating_points, sweep
from eebench.evaluation.overthinking import (
    first_correct_exit,
    overthinking_rate,
    overthinking_table,
    wasted_table,
)
from eebench.evaluation.pareto import anytime, front_chosen_on_val, is_reference, pareto_front
from eebench.evaluation.record import (
    ExitRecord,
    RecordMismatchError,
    load_or_record,
    model_key_of,
    record_exits,
    record_filename,
)
from eebench.evaluation.reference import reference_exits, reference_operating_points
from eebench.evaluation.vectorised import (
    ExitSums,
    as_threshold_array,
    count_at_most,
    exit_indices,
    exit_sums,
)
from eebench.policies.confidence import NonFiniteLogitsError

__all__ = [
    "count_at_most",
    "BudgetedBatchSweep",
    "budgeted_batch_distributions",
    "budgeted_batch_sweep",
    "Calibration",
    "CalibrationError",
    "CostVector",
    "ExitRecord",
    "ExitSums",
    "NonFiniteLogitsError",
    "OperatingPoints",
    "RecordMismatchError",
    "anytime",
    "as_threshold_array",
    "calibrate_accuracy_drop",
    "calibrate_budget",
    "calibrate_budgeted_batch",
    "calibrate_exit_distribution",
    "calibrate_idk",
    "calibration_table",
    "check_costs",
    "evaluate",
    "exit_indices",
    "exit_sums",
    "first_correct_exit",
    "front_chosen_on_val",
    "is_reference",
    "load_or_record",
    "model_key_of",
    "operating_points",
    "overthinking_rate",
    "overthinking_table",
    "pareto_front",
    "record_exits",
    "record_filename",
    "reference_exits",
    "reference_operating_points",
    "sweep",
    "wasted_table",
]
