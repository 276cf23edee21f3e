"""Every registered model in a cheap form, whether a suite uses it or not.

Each model is built untrained at the smallest input it supports among
digits-like shapes (1 x s x s, s = 8, 16, 32, 64, 128, 224) and tracked by its
analytic MACs and parameter count (a change means the architecture changed)
and timed for one full pass (``forward_all``, every exit) on torch CPU, batch
1, one thread. A model registered without a benchmark here is impossible by
construction; ``tests/test_asv_coverage.py`` checks it anyway.
"""

from __future__ import annotations

import torch

from eebench.models import InputShapeError, MultiExitModel, create_model, list_models

SIDES = (8, 16, 32, 64, 128, 224)


def smallest_model(name: str) -> MultiExitModel:
    """``name`` built at the smallest supported ``(1, s, s)`` input, 10 classes, eval mode."""
    errors = []
    for side in SIDES:
        try:
            return create_model(name, num_classes=10, input_shape=(1, side, side)).eval()
        except InputShapeError as err:
            errors.append(str(err))
    raise NotImplementedError(f"{name} builds at none of the sides {SIDES}: {errors[-1]}")


class RegisteredModels:
    """Analytic costs and a torch CPU full pass of every registered model."""

    params = [list_models()]
    param_names = ["model_name"]

    def setup(self, model_name: str) -> None:
        self.model = smallest_model(model_name)
        self.x = torch.zeros(1, *self.model.metadata.input_shape)
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def teardown(self, model_name: str) -> None:
        if hasattr(self, "threads"):
            torch.set_num_threads(self.threads)

    def track_macs(self, model_name):
        from eebench.costs import analyze_costs

        return float(analyze_costs(self.model).cumulative_macs[-1])

    track_macs.unit = "MACs to the final exit (analytic)"

    def track_plain_network_macs(self, model_name):
        from eebench.costs import analyze_costs

        return float(analyze_costs(self.model).plain_macs)

    track_plain_network_macs.unit = "MACs without early exits (analytic)"

    def track_params(self, model_name):
        return float(sum(p.numel() for p in self.model.parameters()))

    track_params.unit = "parameters"

    def time_forward_all(self, model_name):
        with torch.inference_mode():
            self.model.forward_all(self.x)
