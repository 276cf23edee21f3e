"""Record-once policy evaluation on a fixed synthetic record, beside the straightforward loops.

The record is 8 exits x 10,000 samples x 10 classes of seeded logits in which later exits are
right more often and surer (the workload of issue 11), so the timings do not depend on a
trained model. Pairs of ``time_*`` benchmarks time eebench and the plain implementation of the
same question on the same inputs, so asv's history shows both and their ratio:

* :class:`SharedThresholdSweep`: 1,000 shared thresholds of one confidence measure, given its
  scores (``time_eebench``), the plain numpy loop over thresholds (``time_plain_loop``), and
  computing the scores themselves from the logits (``time_confidence``);
* :class:`MSDNetBudgetedBatch`: MSDNet's 40 q points, thresholds chosen on the val half and
  evaluated on both halves, in one call.
"""

from __future__ import annotations

import numpy as np

N, E, C, T = 10_000, 8, 10, 1_000
MEASURES = ["max_softmax", "score_margin", "entropy"]


def synthetic_logits(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded logits ``(N, E, C)`` float32 and labels: exit ``i`` is right with probability rising
    from 0.3 to 0.9 along the exits, by a margin rising from 1 to 4."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, N)
    logits = rng.normal(size=(N, E, C))
    right = rng.random((N, E)) < np.linspace(0.3, 0.9, E)
    logits[np.arange(N)[:, None], np.arange(E)[None, :], labels[:, None]] += right * np.linspace(
        1, 4, E
    )
    return logits.astype(np.float32), labels


def plain_threshold_loop(scores: np.ndarray, thresholds: np.ndarray, correct: np.ndarray):
    """For each threshold: every sample's first exit whose score reaches it (the final exit
    takes the rest), the exit counts and the number of right answers."""
    n, e = scores.shape
    rows = np.arange(n)
    counts = np.zeros((len(thresholds), e), dtype=np.int64)
    right = np.zeros(len(thresholds), dtype=np.int64)
    for k, t in enumerate(thresholds):
        fire = scores >= t
        fire[:, -1] = True
        exits = fire.argmax(axis=1)
        counts[k] = np.bincount(exits, minlength=e)
        right[k] = correct[rows, exits].sum()
    return counts, right


def _record(logits: np.ndarray, labels: np.ndarray, split: str, offset: int = 0):
    from eebench.evaluation import ExitRecord

    ids = np.arange(offset, offset + len(labels))
    return ExitRecord(logits, labels, ids, "asv-synthetic", "asv-synthetic-data", split)


class SharedThresholdSweep:
    """One confidence measure, 1,000 shared thresholds, 8 exits x 10,000 samples."""

    params = [MEASURES]
    param_names = ["measure"]
    timeout = 120

    def setup(self, measure: str) -> None:
        self.logits, self.labels = synthetic_logits()
        record = _record(self.logits, self.labels, "test")
        self.scores = record.confidence(measure)
        self.correct = record.correct
        self.thresholds = np.linspace(0.0, 1.0, T)

    def time_eebench(self, measure: str) -> None:
        from eebench.evaluation import exit_sums

        exit_sums(self.scores, self.thresholds, {"correct": self.correct})

    def time_plain_loop(self, measure: str) -> None:
        plain_threshold_loop(self.scores, self.thresholds, self.correct)

    def time_confidence(self, measure: str) -> None:
        from eebench.policies import confidence

        confidence(measure, self.logits)  # float64 log-softmax, then the measure


class MSDNetBudgetedBatch:
    """MSDNet's 40 exit-probability priors q, exactly as its public code rounds them."""

    timeout = 120

    def setup(self) -> None:
        from eebench.evaluation import CostVector
        from eebench.policies import ThresholdPolicy

        logits, labels = synthetic_logits()
        half = N // 2
        self.val = _record(logits[:half], labels[:half], "val")
        self.test = _record(logits[half:], labels[half:], "test", offset=half)
        for record in (self.val, self.test):
            record.log_probs  # noqa: B018 - computed once, as a run's records have it
        self.policy = ThresholdPolicy("max_softmax")
        self.macs = CostVector.macs(np.cumsum(np.full(E, 1.0e6)))

    def time_sweep_all_q(self) -> None:
        from eebench.evaluation import budgeted_batch_sweep

        budgeted_batch_sweep(self.val, self.test, self.policy, [self.macs])
