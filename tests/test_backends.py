"""Backends: registry and families, numerical parity of ONNX Runtime with torch eager on every
registered model, the export cache, unused graph inputs, thread settings, guarded CUDA paths."""

import numpy as np
import pytest
import torch

from eebench.backends import (
    BACKENDS,
    OrtPrepared,
    get_backend,
    list_backends,
    model_hash,
    register_backend_family,
)
from eebench.backends import base as backends_base
from eebench.backends.base import Backend
from eebench.errors import BackendUnavailable, ConfigError
from eebench.models import InputShapeError, create_model, list_models
from eebench.registry import Registry, UnknownNameError

SHAPES = [(1, 8, 8), (3, 32, 32), (3, 64, 64)]  # smallest first; a model too deep for 8x8 moves up

RTOL = 1e-4  # relative parity with torch eager
ATOL_SCALE = 1e-5  # near-zero values: absolute tolerance 1e-5 x max(1, max |reference|)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # restored by conftest


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    """One export cache for the test session: shared with the executor tests."""
    return tmp_path_factory.getbasetemp() / "onnx-cache"


def build_small(name: str):
    """The registered model on the smallest input shape it accepts, in eval mode."""
    for shape in SHAPES:
        try:
            return create_model(name, num_classes=10, input_shape=shape).eval()
        except InputShapeError:
            continue
    pytest.fail(f"{name} builds on none of {SHAPES}")


def test_backends_are_registered_and_lookup_suggests_names():
    assert {"torch-cpu", "torch-cuda", "onnxruntime"} <= set(BACKENDS.names())
    assert "torch-cpu" in list_backends()
    with pytest.raises(UnknownNameError, match="Did you mean 'torch-cpu'"):
        get_backend("torch-cpy")


def test_a_backend_family_serves_every_name_with_its_prefix(monkeypatch):
    monkeypatch.setattr(backends_base, "BACKEND_FAMILIES", Registry("backend family"))
    monkeypatch.setattr(backends_base, "FAMILY_MODULES", {})
    seen = []

    class Fake(Backend):
        name = "fake"

        def __init__(self, argument, **options):
            seen.append((argument, options))

        def available(self):
            return True, ""

        def prepare(self, model, batch_size=1, threads=None, **options):
            raise NotImplementedError

    register_backend_family("fake", members=lambda: ["a", "b"])(Fake)
    assert isinstance(get_backend("fake:jetson-orin-nano", precision="fp16"), Fake)
    assert seen == [("jetson-orin-nano", {"precision": "fp16"})]
    assert "fake:<argument>" in list_backends()
    assert {"fake:a", "fake:b"} <= set(list_backends(expand_families=True))
    with pytest.raises(UnknownNameError):
        get_backend("fake:")
    with pytest.raises(ValueError, match="already registered"):
        register_backend_family("fake")(Fake)
    with pytest.raises(ValueError, match="cannot contain ':'"):
        register_backend_family("a:b")


def test_torch_cpu_matches_the_model_and_records_threads():
    model = build_small("cascade")
    x = torch.randn(2, *model.input_shape)
    prepared = get_backend("torch-cpu").prepare(model, batch_size=2, threads=1)
    with prepared.activated():
        got = [prepared.to_numpy(v) for v in prepared.run_all(prepared.to_input(x))]
        d = prepared.describe()
    with torch.no_grad():
        want = [t.numpy() for t in model.forward_all(x)]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert (d["backend"], d["device"], d["threads"], d["dtype"]) == (
        "torch-cpu",
        "cpu",
        1,
        "float32",
    )
    assert (
        model.training is False and next(model.parameters()).requires_grad
    )  # caller's model untouched


def test_select_keeps_the_rows_asked_for():
    model = build_small("cascade")
    prepared = get_backend("torch-cpu").prepare(model, threads=1)
    state = (torch.arange(12.0).reshape(4, 3), torch.arange(4.0))
    out = prepared.select(state, np.array([True, False, False, True]))
    assert out[0].tolist() == [[0, 1, 2], [9, 10, 11]] and out[1].tolist() == [0, 3]


@pytest.mark.parametrize("name", list_models())
def test_onnxruntime_matches_torch_eager_on_every_registered_model(name, onnx_cache):
    model = build_small(name)
    x = torch.randn(2, *model.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want_states = model.example_states(1)  # shapes only
        want = [t.numpy() for t in model.forward_all(x)]
    prepared = get_backend("onnxruntime").prepare(
        model, batch_size=2, threads=1, cache_dir=onnx_cache
    )
    with prepared.activated():
        states = prepared.stage_inputs(prepared.to_input(x))
        got = [
            prepared.to_numpy(prepared.run_exit(i, states[i + 1])) for i in range(model.num_stages)
        ]
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape == (2, 10), f"exit {i}"
        atol = ATOL_SCALE * max(1.0, float(np.abs(w).max()))
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=atol, err_msg=f"{name} exit {i}")
    for i, (s, ref) in enumerate(
        zip(states[1:], want_states[1:])
    ):  # every stage keeps the state layout
        assert [a.shape[1:] for a in s] == [tuple(r.shape[1:]) for r in ref], f"stage {i}"


def test_graphs_declare_only_the_inputs_they_read(onnx_cache):
    """A cascade stage receives (x, features) and reads only x; its exit reads only features."""
    model = build_small("cascade")
    prepared = get_backend("onnxruntime").prepare(model, threads=1, cache_dir=onnx_cache)
    assert prepared.exported.stages[1].inputs == (("in0", 0),)
    assert prepared.exported.exits[1].inputs == (("in1", 1),)
    x = np.random.default_rng(0).standard_normal((3, *model.input_shape)).astype(np.float32)
    with prepared.activated():
        s1 = prepared.run_stage(0, (x,))
        s2 = prepared.run_stage(1, s1)  # fed by name: the unused features are not passed
    assert len(s2) == 2 and s2[0].shape == x.shape


def test_export_cache_is_keyed_by_the_weights(tmp_path):
    model = create_model("cascade", input_shape=(1, 8, 8), num_members=2, width=4).eval()
    backend = get_backend("onnxruntime")
    first = backend.prepare(model, threads=1, cache_dir=tmp_path)
    again = backend.prepare(model, threads=1, cache_dir=tmp_path)
    assert not first.describe()["export_cached"] and again.describe()["export_cached"]
    key = model_hash(model)
    with torch.no_grad():
        model.exits[0].fc.bias.add_(1.0)
    assert model_hash(model) != key
    changed = backend.prepare(model, threads=1, cache_dir=tmp_path)
    assert not changed.describe()["export_cached"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([key, model_hash(model)])


def test_onnxruntime_records_its_session_settings(onnx_cache):
    model = build_small("cascade")
    prepared = get_backend("onnxruntime").prepare(
        model, threads=2, interop_threads=1, graph_optimization_level="basic", cache_dir=onnx_cache
    )
    assert isinstance(prepared, OrtPrepared)
    d = prepared.describe()
    assert d["threads"] == 2 and d["interop_threads"] == 1
    assert d["graph_optimization_level"] == "basic" and d["provider"] == "CPUExecutionProvider"
    assert d["session_providers"] == ["CPUExecutionProvider"] and d["io_binding"] is False
    opts = prepared._stages[0].session.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (2, 1)


def test_onnxruntime_option_errors_say_what_is_accepted(onnx_cache):
    model = build_small("cascade")
    backend = get_backend("onnxruntime")
    with pytest.raises(ConfigError, match="onnxruntime.provider: expected one of"):
        backend.prepare(model, provider="tpu", cache_dir=onnx_cache)
    with pytest.raises(ConfigError, match="graph_optimization_level"):
        backend.prepare(model, graph_optimization_level="max", cache_dir=onnx_cache)
    with pytest.raises(ConfigError, match="unknown option"):
        backend.prepare(model, thread=2)
    with pytest.raises(ConfigError, match="positive integer thread count"):
        backend.prepare(model, threads=0, cache_dir=onnx_cache)
    if "cuda" not in backend.providers():
        with pytest.raises(
            BackendUnavailable, match="CUDAExecutionProvider is not in this onnxruntime"
        ):
            backend.prepare(model, provider="cuda", cache_dir=onnx_cache)


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message shown when CUDA is missing"
)
def test_torch_cuda_says_why_it_is_unavailable():
    backend = get_backend("torch-cuda")
    ok, reason = backend.available()
    assert not ok and ("CPU-only" in reason or "no CUDA device" in reason)
    with pytest.raises(BackendUnavailable, match="torch-cuda"):
        backend.prepare(build_small("cascade"))


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)"
)
def test_torch_cuda_matches_cpu_and_times_with_events():
    from eebench.measure import TimingConfig, measure_parts

    model = build_small("cascade")
    x = torch.randn(2, *model.input_shape)
    prepared = get_backend("torch-cuda").prepare(model, batch_size=2, threads=1)
    with prepared.activated():
        got = [prepared.to_numpy(v) for v in prepared.run_all(prepared.to_input(x))]
    with torch.no_grad():
        want = [t.numpy() for t in model.forward_all(x)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4)
    parts = measure_parts(prepared, x, config=TimingConfig(warmup=2, min_runs=3, min_time_s=0))
    assert all(m.spec.device.startswith("cuda") and min(m.samples_ns) > 0 for m in parts.all)


@pytest.mark.skipif(
    "cuda" not in get_backend("onnxruntime").providers(),
    reason="needs onnxruntime-gpu with the CUDA execution provider (not installed here)",
)
def test_onnxruntime_cuda_keeps_states_on_the_device(onnx_cache):
    model = build_small("cascade")
    x = torch.randn(2, *model.input_shape)
    prepared = get_backend("onnxruntime").prepare(model, provider="cuda", cache_dir=onnx_cache)
    with prepared.activated():
        outs = prepared.run_all(prepared.to_input(x))
    assert all(v.device_name() == "cuda" for v in outs)
    with torch.no_grad():
        want = model.forward_all(x)[-1].numpy()
    np.testing.assert_allclose(prepared.to_numpy(outs[-1]), want, rtol=1e-3, atol=1e-4)


def test_list_backends_command_shows_availability_and_meters(capsys):
    from eebench.cli import main

    assert main(["list", "backends"]) == 0
    out = capsys.readouterr().out
    assert "torch-cpu" in out and "onnxruntime" in out and "available" in out
    if not torch.cuda.is_available():
        assert "torch-cuda" in out and "unavailable:" in out
    assert "Energy meters" in out and "rapl" in out and "estimated" in out
