"""The ``--input-shape C,H,W`` argument shared by the model commands (``list models``,
``check-model``, ``export``). Kept free of heavy imports: ``list models`` answers from its cache
without importing torch."""

from __future__ import annotations

import argparse


def parse_input_shape(text: str) -> tuple[int, ...]:
    """``"3,32,32"`` -> ``(3, 32, 32)``; anything else is an argparse error saying what is expected."""
    try:
        shape = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W such as 3,32,32, got '{text}'") from None
    if len(shape) != 3 or min(shape) <= 0:
        raise argparse.ArgumentTypeError(f"expected three positive integers C,H,W, got '{text}'")
    return shape
