"""asv benchmarks of eebench, derived from a suite file (``suites/quick.yaml`` by default).

asv imports every module of this package to discover benchmarks: ``bench_*``
hold the benchmarks, ``common`` what they share. The stand-alone scripts
(``train_digits.py``, ``backends_report.py``, ``estimator_accuracy.py``) only
run under ``if __name__ == "__main__"``, so importing them does nothing.
"""
