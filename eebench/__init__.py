"""eebench: hardware-aware benchmarking and profiling of early-exit neural networks."""

__version__ = "0.1.0"
