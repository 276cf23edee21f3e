"""The slow, obviously-correct evaluation: one sample at a time, one exit at a time.

For every threshold setting it drives the policy's online decider through the
exits of each sample separately (as a true early-exit run with batch size 1
would) and adds up the metrics in plain Python. It exists to check the
vectorised evaluation (tests assert they agree exactly) and to measure how
much faster the vectorised evaluation is (the benchmark).

A sample pays the cumulative cost of the exit it left at, except under a
baseline that runs the plain network (``final-only``), where every sample
pays ``cost.plain``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from eebench.evaluation.cost_vector import CostVector, check_costs
from eebench.evaluation.record import ExitRecord
from eebench.evaluation.vectorised import as_threshold_array
from eebench.policies.base import Policy


def reference_exits(
    record: ExitRecord, policy: Policy, thresholds: float | np.ndarray | None
) -> tuple[list[int], list[int]]:
    """Exit and predicted class of every sample for one threshold setting (scalar, per-exit or None)."""
    e_total = record.num_exits
    decider = policy.decider(thresholds, num_exits=e_total, labels=record.labels)
    decider.reset(record.num_samples)
    exits, preds = [], []
    for n in range(record.num_samples):
        row = np.array([n])
        for e in range(e_total):
            logits = record.logits[n, e][None, :]
            if decider.decide(e, logits, row)[0]:
                exits.append(e)
                preds.append(int(decider.predict(e, logits, row)[0]))
                break
    return exits, preds


def reference_operating_points(
    record: ExitRecord,
    policy: Policy,
    thresholds: float | np.ndarray | Sequence[float] | None = None,
    costs: Sequence[CostVector] = (),
) -> pd.DataFrame:
    """Per-sample loop giving the metric columns of :func:`~eebench.evaluation.evaluate`."""
    costs = check_costs(costs, record.num_exits)
    if thresholds is None:
        settings: list[float | np.ndarray | None] = [None]
    else:
        th = as_threshold_array(thresholds, record.num_exits, policy.name)
        settings = [float(v) for v in th] if th.ndim == 1 else list(th)
    labels = [int(v) for v in record.labels]
    correct = record.correct.tolist()
    n_total, e_total = record.num_samples, record.num_exits
    plain_network = bool(getattr(policy, "runs_plain_network", False))

    def paid(c: CostVector, exit_index: int) -> float:
        return float(c.plain) if plain_network else float(c.values[exit_index])

    rows = []
    for setting in settings:
        exits, preds = reference_exits(record, policy, setting)
        row: dict[str, object] = {
            "accuracy": sum(p == y for p, y in zip(preds, labels)) / n_total,
        }
        for i in range(e_total):
            row[f"exit_frac_{i}"] = sum(1 for e in exits if e == i) / n_total
        for c in costs:
            row[f"expected_{c.name}"] = sum(paid(c, e) for e in exits) / n_total
        over = lost_early = rescued = 0
        wasted = {c.name: 0.0 for c in costs}
        wasted_frac = {c.name: 0.0 for c in costs}
        for n in range(n_total):
            final_ok = correct[n][-1]
            chosen_ok = preds[n] == labels[n]
            over += any(correct[n][:-1]) and not final_ok
            lost_early += final_ok and not chosen_ok
            rescued += (not final_ok) and chosen_ok
            if any(correct[n]):
                first = correct[n].index(True)
                for c in costs:
                    spent = paid(c, exits[n])
                    waste = max(0.0, spent - float(c.values[first]))
                    wasted[c.name] += waste
                    if spent > 0:
                        wasted_frac[c.name] += waste / spent
        row["overthinking"] = over / n_total
        row["lost_by_exiting_early"] = lost_early / n_total
        row["rescued"] = rescued / n_total
        for c in costs:
            row[f"wasted_{c.name}"] = wasted[c.name] / n_total
            row[f"wasted_frac_{c.name}"] = wasted_frac[c.name] / n_total
        row["exits"] = exits
        row["predictions"] = preds
        rows.append(row)
    return pd.DataFrame(rows)
