"""Suites on a Ray cluster: ``eebench run SUITE --cluster local|auto|ray://HOST:PORT``.

:mod:`~eebench.cluster.plan` groups a suite's steps into units with their dependencies,
:mod:`~eebench.cluster.worker` runs one unit on a node from a snapshot of the run, and
:mod:`~eebench.cluster.driver` schedules the units as Ray tasks (device-bound units on the
node with the Ray resource ``device:<name>``) and writes one results bundle. Ray is the
optional ``cluster`` extra; only the driver imports it.
"""
