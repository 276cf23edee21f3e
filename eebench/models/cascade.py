"""Cascades of independent models (Big/Little networks, IDK cascades).

Member ``i`` is a whole CNN that starts from the raw input: no features are
reused between members. In the stage/exit decomposition, stage ``i`` is the
body of member ``i`` and exit ``i`` is its classifier; the state handed from
stage to stage is ``(x, features_i)`` so the raw input travels on and the next
member starts from scratch. Members share no parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from eebench.models.base import ModelConfigError, MultiExitModel, State, check_positive
from eebench.models.blocks import conv_bn_relu, max_downsamples
from eebench.models.registry import register_model


class MemberBody(nn.Module):
    """A plain CNN body: conv-BN-ReLU layers with 2x2 max-pooling while the map allows it,
    then global average pooling to a feature vector."""

    def __init__(self, in_channels: int, widths: Sequence[int], spatial: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        pools = max_downsamples(spatial, min_side=2)
        c = in_channels
        for j, w in enumerate(widths):
            layers.append(conv_bn_relu(c, w))
            if j < pools:
                layers.append(nn.MaxPool2d(2))
            c = w
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.out_features = c

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class CascadeStage(nn.Module):
    """Stage ``i``: run member ``i`` on the raw input carried in the state."""

    def __init__(self, body: MemberBody) -> None:
        super().__init__()
        self.body = body

    def forward(self, state: State) -> tuple[Tensor, Tensor]:
        x = state if isinstance(state, Tensor) else state[0]
        return x, self.body(x)


class CascadeHead(nn.Module):
    """Exit ``i``: member ``i``'s own linear classifier on its pooled features."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, state: State) -> Tensor:
        return self.fc(state[1])


class Cascade(MultiExitModel):
    """N independent member CNNs of growing size, cheapest first."""

    family = "cascade"

    def __init__(
        self,
        num_classes: int,
        input_shape: Sequence[int],
        members: Sequence[Sequence[int]],
    ) -> None:
        super().__init__(num_classes, input_shape)
        name = type(self).__name__
        if not members:
            raise ModelConfigError(
                name, "members", "at least one member (a list of conv widths)", members
            )
        for k, widths in enumerate(members):
            check_positive(name, **{f"members[{k}]": list(widths)})
        c, h, w = self.input_shape
        for widths in members:
            body = MemberBody(c, widths, min(h, w))
            self.stages.append(CascadeStage(body))
            self.exits.append(CascadeHead(body.out_features, num_classes))
        self.members = [list(m) for m in members]

    def _exit_read_tensor(self, i: int, state: State) -> Tensor:
        return state[1]  # type: ignore[index]


def _growing_members(num_members: int, width: int) -> list[list[int]]:
    """Member i has i + 2 conv layers, widths doubling along the member and across members."""
    return [[width * 2 ** (i + min(j, 2)) for j in range(i + 2)] for i in range(num_members)]


@register_model("cascade")
def cascade(
    num_classes: int,
    input_shape: Sequence[int],
    num_members: int = 3,
    width: int = 16,
    members: Sequence[Sequence[int]] | None = None,
) -> Cascade:
    check_positive("cascade", num_members=num_members, width=width)
    return Cascade(num_classes, input_shape, members or _growing_members(num_members, width))


@register_model("big-little")
def big_little(
    num_classes: int,
    input_shape: Sequence[int],
    width: int = 16,
    members: Sequence[Sequence[int]] | None = None,
) -> Cascade:
    check_positive("big-little", width=width)
    default = [[width, 2 * width], [2 * width, 4 * width, 8 * width, 8 * width]]
    if members is not None and len(members) != 2:
        raise ModelConfigError("big-little", "members", "exactly 2 members (little, big)", members)
    return Cascade(num_classes, input_shape, members or default)
