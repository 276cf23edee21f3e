"""The driver of a cluster run: units as Ray tasks, on the nodes that hold their devices.

``eebench run SUITE --cluster local|auto|ray://HOST:PORT`` keeps the run's bundle, its
checks, its tables and its report on the driver, as a run on one machine does, and sends the
steps out as units (:mod:`eebench.cluster.plan`), each a Ray task that runs
:func:`eebench.cluster.worker.execute_unit` on a snapshot of what it needs:

* training, recording and the analytic costs of a model run wherever a CPU is free (one task
  per model, so models train side by side);
* a device-bound unit (measure, validate, serve) of ``<backend>@<device>`` asks for the Ray
  custom resource ``device:<device>``, which only the node holding that device provides (set
  with ``ray start --resources '{"device:<device>": 1}'``); a plain backend's unit runs on the
  driver's own node. A device-bound unit also takes every CPU of its node, so nothing else of
  the run shares the machine while it measures, and the driver sends at most one unit per
  device at a time;
* each finished unit is written into the bundle at once (steps, exit records, cache files,
  the node's environment), so a driver killed at any moment keeps every finished unit and
  ``--resume`` sends only the rest. A unit whose node dies is retried by Ray on another node
  with the resource (``max_retries``); one that still fails is recorded with the reason, the
  units that do not depend on it finish, and the run ends ``failed`` with the command that
  continues it.

Before anything runs, every node must run the same eebench version (and commit, where both
know theirs) as the driver.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eebench.backends.placement import device_resource, parse_placement
from eebench.cluster.plan import DRIVER_DEVICE, Unit, check_address, plan_units, prerequisites
from eebench.cluster.worker import (
    SNAPSHOT_FOLDERS,
    Snapshot,
    UnitResult,
    execute_unit,
    list_files,
)
from eebench.errors import ConfigError, EEBenchError

MAX_RETRIES = 2
"""Ray retries a unit whose worker or node died this many times (on any node that fits)."""


class ClusterError(EEBenchError):
    """A cluster that cannot run the suite (it cannot be reached, or runs other eebench code)."""


class UnitsFailed(ClusterError):
    """Units of a cluster run that failed; every other unit finished and is in the bundle."""

    exit_code = 1


def require_ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError:
        raise ConfigError(
            "--cluster runs the suite on Ray, which is not installed: pip install 'eebench[cluster]'"
        ) from None
    return ray


@dataclass
class NodeInfo:
    node_id: str
    address: str
    cpus: float
    gpus: float
    resources: dict[str, float]


@dataclass
class ClusterSession:
    """A connection to a Ray cluster whose nodes were checked against the driver."""

    address: str
    ray: Any
    started_here: bool
    driver_node: str
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def providers(self, device: str) -> list[NodeInfo]:
        """The nodes that hold ``device`` (the driver's node for a plain backend)."""
        if device == DRIVER_DEVICE:
            return [self.nodes[self.driver_node]]
        return [n for n in self.nodes.values() if n.resources.get(device_resource(device), 0) > 0]

    def describe(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "driver_node": self.driver_node,
            "nodes": {
                nid: {
                    "address": n.address,
                    "cpus": n.cpus,
                    "gpus": n.gpus,
                    "devices": sorted(
                        k.split(":", 1)[1] for k in n.resources if k.startswith("device:")
                    ),
                    **self.versions.get(nid, {}),
                }
                for nid, n in self.nodes.items()
            },
        }

    def close(self) -> None:
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()


def _node_identity() -> dict[str, Any]:
    """What must match across nodes (and what each node is), read on the node itself."""
    from eebench import __version__
    from eebench.results.identity import process_commit

    return {
        "hostname": socket.gethostname(),
        "eebench_version": __version__,
        "git_commit": process_commit(),
        "python": sys.version.split()[0],
    }


def open_cluster(address: str, log: Callable[[str], None]) -> ClusterSession:
    """Connect (or start Ray on this machine for ``local``) and check every node's eebench."""
    from eebench import __version__
    from eebench.results.identity import process_commit

    ray = require_ray()
    check_address(address)
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": "ERROR",
        }
        if address == "local":
            kwargs["num_cpus"] = os.cpu_count() or 1
        else:
            kwargs["address"] = address
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ClusterError(f"--cluster {address}: cannot connect to Ray: {err}") from None
        started = True
    driver_node = ray.get_runtime_context().get_node_id()
    session = ClusterSession(address, ray, started, driver_node)
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = dict(n.get("Resources") or {})
        session.nodes[n["NodeID"]] = NodeInfo(
            n["NodeID"],
            n.get("NodeManagerAddress", "?"),
            float(res.get("CPU", 0)),
            float(res.get("GPU", 0)),
            res,
        )
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(_node_identity)
    refs = {
        nid: probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(nid, soft=False)
        ).remote()
        for nid in session.nodes
    }
    mine = {"eebench_version": __version__, "git_commit": process_commit()}
    for nid, ref in refs.items():
        session.versions[nid] = {**ray.get(ref), "address": session.nodes[nid].address}
    problem = version_problems(mine, session.versions)
    if problem:
        session.close()
        raise ClusterError(problem)
    devices = sorted(
        {
            k.split(":", 1)[1]
            for n in session.nodes.values()
            for k in n.resources
            if k.startswith("device:")
        }
    )
    log(
        f"cluster {address}: {len(session.nodes)} node(s), "
        f"{sum(n.cpus for n in session.nodes.values()):g} CPUs, "
        f"devices: {', '.join(devices) if devices else 'none besides the driver machine'}"
    )
    return session


def version_problems(mine: dict[str, Any], nodes: dict[str, dict[str, Any]]) -> str | None:
    """Why the nodes cannot run this driver's suite (other eebench version, or another commit
    where both know theirs), or None. Steps computed by other code must not share a bundle."""
    bad = []
    for found in nodes.values():
        for key in ("eebench_version", "git_commit"):
            theirs, ours = found.get(key), mine.get(key)
            if theirs != ours and (key == "eebench_version" or (theirs and ours)):
                bad.append(
                    f"  node {found.get('hostname', '?')} ({found.get('address', '?')}): {key} "
                    f"{theirs}, the driver {ours}"
                )
    if not bad:
        return None
    return (
        "refusing to run on nodes with other eebench code than the driver (their numbers would "
        "be computed by other code):\n" + "\n".join(bad) + "\nInstall the same eebench version "
        "on every node (pip install eebench==<version>, or a checkout of the same commit)"
    )


def _task(snap: Snapshot) -> UnitResult:
    """The Ray task: one unit on this node, with the node's id next to its environment."""
    import ray

    result = execute_unit(snap)
    result.environment["ray_node_id"] = ray.get_runtime_context().get_node_id()
    return result


class Scheduler:
    """Sends a run's units to the cluster in dependency order and writes what comes back."""

    def __init__(self, runner: Any, session: ClusterSession) -> None:
        self.runner = runner
        self.session = session
        self.ray = session.ray
        self.writer = runner.writer
        self.spec = runner.spec
        self.log = runner.log
        state = self.writer.manifest.get("cluster") or {}
        self.units_state: dict[str, dict[str, Any]] = dict(state.get("units") or {})
        self.cache_files: dict[str, list[str]] = {
            k: list(v) for k, v in (state.get("cache_files") or {}).items()
        }
        self.node_envs: dict[str, Any] = dict(state.get("node_environments") or {})
        self.remote = self.ray.remote(_task)

    # ------------------------------------------------------------------ bookkeeping
    def _save(self) -> None:
        self.writer.note(
            cluster={
                **self.session.describe(),
                "node_environments": self.node_envs,
                "units": self.units_state,
                "cache_files": self.cache_files,
            }
        )

    def _done(self, unit: Unit) -> bool:
        return self.units_state.get(unit.id, {}).get("status") in ("done", "skipped")

    # ------------------------------------------------------------------ snapshots
    def _model_cache(self, label: str) -> dict[str, bytes]:
        cache = Path(self.runner.options.cache_root)
        files = list(self.cache_files.get(label, []))
        ckpt = self._checkpoint_path(label)
        if ckpt is not None and ckpt.is_file():
            files.append(ckpt.relative_to(cache).as_posix())
        return {
            rel: (cache / rel).read_bytes()
            for rel in dict.fromkeys(files)
            if (cache / rel).is_file()
        }

    def _checkpoint_path(self, label: str) -> Path | None:
        from eebench.models.registry import canonical_model_name
        from eebench.training import CheckpointCache, TrainConfig

        mspec = next(m for m in self.spec.models if m.label == label)
        if mspec.checkpoint is not None:
            return None
        tconf = TrainConfig.from_dict(dict(mspec.training))
        cache = CheckpointCache(Path(self.runner.options.cache_root) / "checkpoints")
        name = canonical_model_name(mspec.name, self.runner.source.parent)
        return cache.path_for(name, dict(mspec.config), self.runner.splits, tconf)

    def _suite_files(self) -> dict[str, bytes]:
        """The suite file first, then the files it names by relative path (factory files,
        checkpoints), relative to its folder."""
        source = Path(self.runner.source)
        files = {source.name: source.read_bytes()}
        for m in self.spec.models:
            names = []
            target = m.name.split(":", 1)[0]
            if target.endswith(".py"):
                names.append(target)
            if m.checkpoint is not None:
                names.append(m.checkpoint if isinstance(m.checkpoint, str) else m.checkpoint.path)
            for rel in names:
                p = source.parent / rel
                if not Path(rel).is_absolute() and p.is_file():
                    files[Path(rel).as_posix()] = p.read_bytes()
        return files

    def _snapshot(self, unit: Unit) -> Snapshot:
        run = self.writer.path
        run_files = {"manifest.json": (run / "manifest.json").read_bytes()}
        for folder in SNAPSHOT_FOLDERS:
            for rel, p in list_files(run / folder).items():
                run_files[f"{folder}/{rel}"] = p.read_bytes()
        device = unit.device
        return Snapshot(
            unit=unit.to_dict(),
            suite=self.writer.manifest["suite"],
            suite_files=self._suite_files(),
            suite_name=Path(self.runner.source).name,
            original_source=str(Path(self.runner.source).resolve()),
            run_id=run.name,
            suite_folder=run.parent.name,
            run_files=run_files,
            cache_files=self._model_cache(unit.model),
            devices=[device] if device not in (None, DRIVER_DEVICE) else [],
            train_progress=False,
        )

    # ------------------------------------------------------------------ placement
    def _options(self, unit: Unit) -> dict[str, Any]:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        opts: dict[str, Any] = {"max_retries": MAX_RETRIES, "retry_exceptions": False}
        device = unit.device
        if device is None:
            most = max((n.cpus for n in self.session.nodes.values()), default=1.0)
            want = self.spec.train_threads if unit.kind == "host" else 1
            opts["num_cpus"] = float(min(want, most))
            return opts
        nodes = self.session.providers(device)
        # the whole node: nothing else of the run shares the machine while it measures
        opts["num_cpus"] = min(n.cpus for n in nodes)
        backend = parse_placement(unit.backend or "").backend
        if backend == "torch-cuda" and min(n.gpus for n in nodes) >= 1:
            opts["num_gpus"] = 1
        if device == DRIVER_DEVICE:
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                self.session.driver_node, soft=False
            )
        else:
            opts["resources"] = {device_resource(device): 1}
        return opts

    def _missing_devices(self, units: list[Unit]) -> dict[str, str]:
        """Backend -> why no node can run it (its device is on no node)."""
        missing = {}
        for u in units:
            if u.device and u.device != DRIVER_DEVICE and not self.session.providers(u.device):
                missing[u.backend or ""] = (
                    f"no node of the cluster provides the Ray resource "
                    f"'{device_resource(u.device)}' (start the node holding '{u.device}' with: "
                    f"ray start --address <head> --resources '{{\"{device_resource(u.device)}\": 1}}')"
                )
        return missing

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        units = plan_units(self.spec)
        missing = self._missing_devices(units)
        for u in units:
            if u.backend in missing and u.device_bound and not self._done(u):
                # recorded under the keys a run on one machine skips them with (validation
                # of an unavailable backend leaves no row there either)
                keys = {"measure": f"skip:{u.model}:{u.backend}", "serve": u.id}
                key = keys.get(u.kind)
                if key is not None:
                    self.runner._skip(key, u.model, u.kind, u.backend, missing[u.backend])
                self.units_state[u.id] = {
                    "status": "skipped",
                    "reason": missing[u.backend],
                    "steps": [key] if key is not None else [],
                }
        self._save()
        pending = [u for u in units if not self._done(u)]
        failed: dict[str, str] = {}
        in_flight: dict[Any, Unit] = {}
        busy: set[str] = set()
        try:
            while pending or in_flight:
                for u in list(pending):
                    needs = [
                        p for p in prerequisites(u, self.spec) if p.id in {x.id for x in units}
                    ]
                    lost = [p.id for p in needs if p.id in failed]
                    if lost:
                        pending.remove(u)
                        failed[u.id] = f"not run: it needs {', '.join(lost)}, which failed"
                        continue
                    if not all(self._done(p) for p in needs):
                        continue
                    if u.device is not None and u.device in busy:
                        continue
                    ref = self.remote.options(**self._options(u)).remote(self._snapshot(u))
                    in_flight[ref] = u
                    pending.remove(u)
                    if u.device is not None:
                        busy.add(u.device)
                    self.runner._current = u.id
                if not in_flight:
                    break
                ready, _ = self.ray.wait(list(in_flight), num_returns=1)
                u = in_flight.pop(ready[0])
                busy.discard(u.device or "")
                try:
                    result = self.ray.get(ready[0])
                except Exception as err:  # noqa: BLE001 (every failure is recorded with its reason)
                    failed[u.id] = _failure(err)
                    self.units_state[u.id] = {"status": "failed", "reason": failed[u.id]}
                    self._save()
                    self.log(f"  FAILED {u.id}: {failed[u.id]}")
                    continue
                self._merge(u, result)
        except KeyboardInterrupt:
            for ref in in_flight:
                self.ray.cancel(ref, force=True)
            raise
        self._reorder(units)
        if failed:
            lines = "\n".join(f"  {k}: {v}" for k, v in failed.items())
            raise UnitsFailed(
                f"{len(failed)} unit(s) of the run did not finish; every finished unit is kept:\n{lines}"
            )

    def _merge(self, unit: Unit, result: UnitResult) -> None:
        from eebench.results.bundle import atomic_write_bytes

        env = dict(result.environment)
        node = str(env.get("ray_node_id", "?"))
        host = env.get("hostname", node[:8])
        run = self.writer.path
        for rel, data in result.run_files.items():
            atomic_write_bytes(run / rel, data)
        cache = Path(self.runner.options.cache_root)
        for rel, data in result.cache_files.items():
            atomic_write_bytes(cache / rel, data)
            self.cache_files.setdefault(unit.model, [])
            if rel not in self.cache_files[unit.model]:
                self.cache_files[unit.model].append(rel)
        keys = []
        for step in result.steps:
            info = {**step["info"], "node": node}
            self.writer.finish_step_bytes(step["key"], step["tables"], info, step["seconds"])
            keys.append(step["key"])
        for k, v in result.manifest_notes.items():
            old = self.writer.manifest.get(k)
            self.writer.note(
                **{k: {**old, **v} if isinstance(old, dict) and isinstance(v, dict) else v}
            )
        self.node_envs.setdefault(node, env)
        self.units_state[unit.id] = {
            "status": "done",
            "node": node,
            "hostname": host,
            "seconds": result.seconds,
            "steps": keys,
        }
        self._save()
        for line in result.log:
            self.log(f"  [{host}] {line.strip()}")

    def _reorder(self, units: list[Unit]) -> None:
        order = [k for u in units for k in self.units_state.get(u.id, {}).get("steps", [])]
        self.writer.reorder_steps(order)


def _failure(err: BaseException) -> str:
    """A unit's failure in one line: the step's own error, or what happened to its node."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''} (after {MAX_RETRIES} retries)"


def run_on_cluster(runner: Any, session: ClusterSession) -> None:
    """The run's steps as Ray tasks (called by the runner in place of its own loop)."""
    t0 = time.perf_counter()
    Scheduler(runner, session).run()
    runner.writer.record_timing("cluster_s", time.perf_counter() - t0)
