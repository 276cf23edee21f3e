"""Train the example's plain ResNet (no exits) on digits and save its ``state_dict``: a stand-in
for a network someone trained elsewhere, which ``own_network_pretrained.yaml`` then loads with
``checkpoint: {backbone: ...}`` and ``training: heads`` (only the attached exits learn).

    python examples/pretrain_backbone.py [--out examples/resnet_backbone.pt] [--epochs 8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from eebench.data import get_splits

HERE = Path(__file__).resolve().parent


def main() -> None:
    import sys

    sys.path.insert(0, str(HERE))
    from resnet_exits import ResNet

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "resnet_backbone.pt")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    splits = get_splits("digits", seed=0)
    net = ResNet(splits.num_classes, in_channels=splits.input_shape[0], width=8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    x, y = torch.as_tensor(splits.train.x), torch.as_tensor(splits.train.y)
    g = torch.Generator().manual_seed(0)
    for _ in range(args.epochs):
        net.train()
        for idx in torch.randperm(len(y), generator=g).split(64):
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = net(torch.as_tensor(splits.val.x)).argmax(1) == torch.as_tensor(splits.val.y)
    torch.save(net.state_dict(), args.out)
    print(f"val accuracy {acc.float().mean():.3f}; backbone weights written to {args.out}")


if __name__ == "__main__":
    main()
