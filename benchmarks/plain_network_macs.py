"""What the no-early-exit baseline costs, per registered model: before and after it became the
plain network.

``final-only`` used to be charged the cumulative MACs of the final exit: every stage, every exit
head and, for a cascade, every member. It is now charged the plain network: every stage and the
final head only (intermediate classifiers, multi-scale networks), or a cascade's last member
alone. Every saving and speedup "vs final-only" was inflated by the difference; this prints it.

MACs are analytic (fvcore; 1 MAC = one multiply-add of conv/linear/matmul, FLOPs = 2 x MACs),
per sample, at the given input shape.

Run:  python benchmarks/plain_network_macs.py [--input-shape 3,32,32] [--classes 10] [--filter 'sdn-*']
"""

from __future__ import annotations

import argparse

import pandas as pd


def plain_network_table(
    input_shape: tuple[int, ...], num_classes: int = 10, filter: str | None = None
) -> pd.DataFrame:
    """One row per registered model: final-only MACs before (cumulative to the final exit) and
    after (the plain network), and by how much the old baseline overstated the cost."""
    from eebench.costs import analyze_costs
    from eebench.models import InputShapeError, create_model, list_models

    rows = []
    for name in list_models(filter):
        try:
            model = create_model(name, num_classes=num_classes, input_shape=input_shape)
        except InputShapeError as err:
            rows.append(
                {
                    "model": name,
                    "family": "-",
                    "exits": "-",
                    "before: final-only MACs (M)": "-",
                    "after: plain network MACs (M)": "-",
                    "overstated by (%)": "-",
                    "plain network runs": "-",
                    "note": f"not runnable: {err}",
                }
            )
            continue
        costs = analyze_costs(model)
        before = int(costs.cumulative_macs[-1])
        after = costs.plain_macs
        rows.append(
            {
                "model": name,
                "family": model.family,
                "exits": model.num_exits,
                "before: final-only MACs (M)": round(before / 1e6, 3),
                "after: plain network MACs (M)": round(after / 1e6, 3),
                "overstated by (%)": round(100 * (before - after) / after, 1),
                "plain network runs": costs.plain.describe(),
                "note": "",
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--input-shape", default="3,32,32", help="C,H,W (default 3,32,32)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--filter", default=None, help="fnmatch pattern over model names")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.input_shape.split(","))
    table = plain_network_table(shape, args.classes, args.filter)
    print(
        f"final-only MACs per registered model on input {args.input_shape}, {args.classes} "
        "classes (analytic, fvcore; FLOPs = 2 x MACs)"
    )
    print(table.to_markdown(index=False) if _has_tabulate() else table.to_string(index=False))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
