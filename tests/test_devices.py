"""Devices and dtypes: the --device / --dtype policy, its errors, traces on the CPU, float32 statistics of
bf16/fp16 models, inputs on the model's device, and out-of-GPU-memory during capture (simulated on CPU).

This machine has no GPU, so the CUDA paths are checked through the same device-agnostic code with fakes:
torch.cuda.is_available patched, a spy on the functions that move tensors, and torch.OutOfMemoryError
raised from inside the capture path.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

import attnscope.devices as devices
from attnscope import capture
from attnscope.errors import CaptureError, InputError



@pytest.fixture(autouse=True)
def _restore_default_placement():
    saved = dict(devices._default)
    yield
    devices._default.clear()
    devices._default.update(saved)


def _fake_gpus(monkeypatch, n: int):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


# ---------------------------------------------------------------------------- resolving names
def test_device_names(monkeypatch):
    _fake_gpus(monkeypatch, 0)
    assert devices.resolve_device("cpu") == torch.device("cpu")
    assert devices.resolve_device(" CPU ") == torch.device("cpu")
    assert devices.resolve_device(None) == torch.device("cpu")
    assert devices.resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert devices.resolve_device("auto") == torch.device("cpu")  # no GPU: auto is the CPU
    with pytest.raises(InputError) as e:
        devices.resolve_device("cuda")
    assert str(e.value) == ("--device cuda: no CUDA device is available to torch (torch.cuda.is_available() is "
                            "False); use --device cpu")
    for bad, needle in [("cuda:1", "no CUDA device"), ("gpu", "is not a device"), ("cuda:x", "is not a device"),
                        ("cpu:0", "takes no index"), ("", "is not a device"), (3, "must be a string"),
                        (torch.device("meta"), "cpu or cuda")]:
        with pytest.raises(InputError, match=needle):
            devices.resolve_device(bad)


def test_device_names_with_fake_gpus(monkeypatch):
    _fake_gpus(monkeypatch, 2)
    assert devices.resolve_device("auto") == torch.device("cuda", 0)
    assert devices.resolve_device("cuda") == torch.device("cuda", 0)
    assert devices.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(InputError, match=r"torch sees 2 CUDA device\(s\) \(cuda:0 to cuda:1\)"):
        devices.resolve_device("cuda:2")


def test_dtype_names():
    for name, dt in [("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16),
                     ("bf16", torch.bfloat16), ("torch.float16", torch.float16), (None, torch.float32),
                     (torch.bfloat16, torch.bfloat16)]:
        assert devices.resolve_dtype(name) == dt
    for bad in ("int8", "float64", torch.float64, torch.int32, 16):
        with pytest.raises(InputError):
            devices.resolve_dtype(bad)


def test_load_model_refuses_cuda_before_loading(monkeypatch):
    from attnscope.models import load_model

    _fake_gpus(monkeypatch, 0)
    monkeypatch.setattr("attnscope.models.ensure_converted", lambda *a, **k: pytest.fail("loaded before checking"))
    with pytest.raises(InputError, match="no CUDA device is available"):
        load_model("minilm", device="cuda")
    with pytest.raises(InputError, match="not a model precision"):
        load_model("minilm", dtype="int4")


def test_load_model_dtype_and_default_placement():
    from attnscope.models import load_model

    lm = load_model("minilm", dtype="bfloat16", device="cpu")
    assert next(lm.model.parameters()).dtype == torch.bfloat16
    devices.set_default_placement("cpu", "float16")  # what --dtype float16 does
    assert next(load_model("minilm").model.parameters()).dtype == torch.float16
    assert next(load_model("minilm", dtype=torch.float32).model.parameters()).dtype == torch.float32  # explicit wins


def test_model_inputs_follow_model_device_and_dtype(tiny):
    lm = tiny("bert")
    half = copy.deepcopy(lm.model).to(torch.bfloat16)
    ids = torch.tensor([[101, 7, 102]])
    feats = torch.rand(1, 4, 5)
    out = devices.model_inputs({"input_ids": ids, "input_features": feats, "flag": True}, half)
    assert out["input_ids"].dtype == torch.long and out["input_ids"].device == devices.model_device(half)
    assert out["input_features"].dtype == torch.bfloat16  # audio features in the model's precision
    assert out["flag"] is True


def test_capture_moves_inputs_through_model_inputs(tiny, monkeypatch):
    """capture, capture_batch and the attribution runner hand the model its inputs through model_inputs
    (what puts them on a GPU model's device)."""
    import attnscope.attribution.interventions as iv
    import attnscope.capture.api as api

    calls = []

    def spy(inputs, model):
        calls.append(sorted(inputs))
        return devices.model_inputs(inputs, model)

    monkeypatch.setattr(api, "model_inputs", spy)
    monkeypatch.setattr(iv, "model_inputs", spy)
    lm = tiny("llama")
    capture(lm, "a b c", mode="stats")
    assert calls and "input_ids" in calls[-1]
    n = len(calls)
    api.capture_batch(lm, ["a b", "c d e"], mode="stats")
    capture(lm, "a b c", method="eager")
    iv.run_with_interventions(lm, iv.encode(lm, "a b c")[0])
    assert len(calls) >= n + 4


# ---------------------------------------------------------------------------- traces on the CPU
def _trace_tensors(trace):
    for payload in (trace._weights, trace._stats, trace._topk):
        for v in payload.values():
            yield from (v.values() if isinstance(v, dict) else v if isinstance(v, tuple) else [v])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_trace_tensor_is_on_the_cpu(tiny, dtype):
    lm = tiny("llama")
    if dtype != torch.float32:
        lm = copy.copy(lm)
        lm.model = copy.deepcopy(lm.model).to(dtype)
    for kw in (dict(mode=["full", "stats", "topk"]), dict(mode="stats"), dict(mode="full", method="eager"),
               dict(mode=["stats", "topk"], heads=[1])):
        trace = capture(lm, "the cat sat on the mat", **kw)
        tensors = list(_trace_tensors(trace))
        assert tensors and all(t.device.type == "cpu" for t in tensors)
        assert all(v.dtype in (torch.float32, torch.int64) for v in trace._stats.get("self", {}).values())


def test_recorders_move_every_block_to_the_cpu(tiny, monkeypatch):
    """Every block a recorder keeps goes through to_cpu (on a GPU that is the device-to-host copy)."""
    import attnscope.capture.recorders as rec

    moved = []

    def spy(obj):
        moved.append(obj)
        return devices.to_cpu(obj)

    monkeypatch.setattr(rec, "to_cpu", spy)
    capture(tiny("bert"), "a b c d", mode=["full", "stats", "topk"], block_elements=16)
    assert len(moved) >= 3 * 2 * 2  # 3 recorders x 2 layers x >= 2 query blocks each


def test_to_cpu_nested():
    x = torch.ones(2)
    out = devices.to_cpu({"a": (3, x), "b": [x]})
    assert out["a"][0] == 3 and out["a"][1] is x and out["b"][0] is x


# ---------------------------------------------------------------------------- bf16 / fp16 models
def _qk_spy(monkeypatch):
    """Record the (query, key, mask) of every attention call of the fast path, as the model made them."""
    import attnscope.capture.interface as itf

    seen = []
    real = itf.sdpa_attention_forward

    def spy(module, query, key, value, attention_mask, **kw):
        seen.append((query.detach().clone(), key.detach().clone(), attention_mask))
        return real(module, query, key, value, attention_mask, **kw)

    monkeypatch.setattr(itf, "sdpa_attention_forward", spy)
    return seen


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_probabilities_are_float32_softmax_of_the_models_qk(tiny, monkeypatch, dtype):
    """The probabilities and statistics of a bf16/fp16 model are softmax(q k^T * scale) in float32 from the
    model's own (bf16/fp16) q and k: compared with the same computation in float64 from the recorded q/k.

    Tolerance: float32 softmax of O(1) scores is exact to a few float32 ulps (2^-24 ≈ 6e-8 relative), so
    1e-5 absolute on probabilities; a softmax done in bf16 instead (8 significand bits, unit roundoff
    2^-8 ≈ 4e-3) would miss it by ~1e-3, and one in fp16 (2^-11 ≈ 5e-4) by ~1e-4 — both caught."""
    lm = copy.copy(tiny("llama"))
    torch.manual_seed(0)
    model = copy.deepcopy(lm.model)
    with torch.no_grad():  # larger weights than the default init, so attention is far from uniform
        for p in model.parameters():
            p.mul_(3.0)
    lm.model = model.to(dtype)
    seen = _qk_spy(monkeypatch)
    trace = capture(lm, "the cat sat on the mat and looked at the dog", mode=["full", "stats"],
                    full_dtype=torch.float32, statistics="all")
    assert len(seen) == 2 and seen[0][0].dtype == dtype
    maps = trace._weights["self"]  # (L, H, N, N)
    max_spread = 0.0
    for layer, (q, k, mask) in enumerate(seen):
        q, k = q[0].double(), k[0].double()  # (H, N, D), (Hkv, N, D)
        k = k.repeat_interleave(q.shape[0] // k.shape[0], dim=0)  # grouped-query: head h reads kv h // g
        n = q.shape[1]
        s = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])  # (H, N, N)
        s = s.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
        ref = torch.softmax(s, -1)  # (H, N, N) float64
        assert (maps[layer].double() - ref).abs().max() < 1e-5
        ent = -(torch.special.xlogy(ref, ref)).sum(-1)  # (H, N)
        assert (trace._stats["self"]["entropy"][layer].double() - ent).abs().max() < 1e-4
        assert (trace._stats["self"]["max"][layer].double() - ref.amax(-1)).abs().max() < 1e-5
        max_spread = max(max_spread, float(ref.amax(-1).min()))
    assert max_spread > 0  # rows are not all uniform

    # the statistics-only (fused) route gives the same numbers from the same q/k: layer 0's (its own float32
    # attention output, cast to the model's dtype, then differs from SDPA's in the last bf16 bit, so the
    # later layers see other inputs)
    stats = capture(lm, "the cat sat on the mat and looked at the dog", mode="stats")._stats["self"]
    for name in ("entropy", "max", "first_token_mass"):
        assert torch.allclose(stats[name][0], trace._stats["self"][name][0], atol=1e-5, rtol=0)


def test_bf16_model_close_to_its_float32_twin(tiny):
    """The bf16 model's attention against the float32 eager attention of the same (bf16-rounded) weights.

    The maps differ only by bf16 rounding of the activations. bf16 keeps 8 significand bits (unit roundoff
    u = 2^-8 ≈ 3.9e-3); the hidden state, its norm, the q/k projections and RoPE each round once per
    layer, so q and k carry a relative error of a few u, and a score s = q·k/√d one of roughly
    |Δs| ≈ 4u·max|s| ≈ 0.07 per layer here (max|s| ≈ 4.2 in layer 0 with these weights, measured).
    softmax moves a weight by at most p·2·max|Δs| ≈ 0.13·p, and layer 1 adds its own; the bound below,
    0.05 on any weight and 2e-3 on the mean, sits between that estimate and what is measured (max |Δp|
    5.5e-3, mean 3.4e-4). A lost float32 upcast or a wrong cast (fp16 scores overflowing, a map of the
    wrong layer) is off by far more."""
    lm32 = copy.copy(tiny("llama"))
    model = copy.deepcopy(lm32.model)
    with torch.no_grad():  # larger weights than the default init: attention far from uniform (row max ~0.44)
        for p in model.parameters():
            p.mul_(3.0)
    lm16 = copy.copy(lm32)
    lm16.model = copy.deepcopy(model).to(torch.bfloat16)
    lm32.model = copy.deepcopy(lm16.model).to(torch.float32)  # the same bf16-rounded weights
    text = "the cat sat on the mat and looked at the dog"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = capture(lm16, text, mode="full", full_dtype=torch.float32)._weights["self"].double()
        b = capture(lm32, text, mode="full", method="eager", full_dtype=torch.float32)._weights["self"].double()
    diff = (a - b).abs()
    assert diff.max() < 0.05 and diff.mean() < 2e-3
    assert b.amax(-1).mean() > 0.3  # peaked rows: the comparison is not between near-uniform maps
    assert (a.sum(-1) - 1).abs().max() < 1e-5  # rows still sum to 1 in float32


# ---------------------------------------------------------------------------- out of GPU memory
def _oom_at_layer(monkeypatch, layer: int):
    """Make recording ``layer`` (either route: probabilities or statistics only) run out of GPU memory."""
    import attnscope.capture.interface as itf

    def boom_at(real):
        def boom(session, site, *a, **kw):
            if site.layer == layer:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            return real(session, site, *a, **kw)
        return boom

    monkeypatch.setattr(itf, "_record", boom_at(itf._record))
    monkeypatch.setattr(itf, "_fused_record", boom_at(itf._fused_record))


def test_out_of_memory_during_capture_is_a_clear_error(tiny, monkeypatch):
    lm = tiny("llama")
    _oom_at_layer(monkeypatch, 1)
    with pytest.raises(CaptureError) as e:
        capture(lm, "a b c", mode="full", block_elements=1 << 20)
    msg = str(e.value)
    assert "\n" not in msg and "out of GPU memory while capturing self layer 1" in msg
    assert "1,048,576 scores" in msg and "--block-elements" in msg and "--layers" in msg
    monkeypatch.undo()
    assert capture(lm, "a b c", mode="full").layers["self"] == [0, 1]  # the model is usable afterwards
    assert lm.model.config._attn_implementation != "attnscope"


@pytest.mark.parametrize("entry", ["generate", "pooled_overview", "capture_batch"])
def test_out_of_memory_in_generate_batch_and_pooled(tiny, monkeypatch, entry):
    import attnscope
    from attnscope.corpus.longcontext import pooled_overview

    lm = tiny("llama")
    _oom_at_layer(monkeypatch, 0)
    run = {"generate": lambda: attnscope.generate(lm, "a b c", max_new_tokens=2, mode="stats"),
           "pooled_overview": lambda: pooled_overview(lm, "a b c d", grid=2),
           "capture_batch": lambda: attnscope.capture_batch(lm, ["a b", "c d e"], mode="full")}[entry]
    with pytest.raises(CaptureError, match="out of GPU memory while capturing self layer 0"):
        run()
    monkeypatch.undo()
    run()  # the model is usable afterwards


def test_out_of_memory_in_the_cli_writes_nothing(tmp_path, capsys, monkeypatch):
    from attnscope.cli import main

    _oom_at_layer(monkeypatch, 3)
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as e:
        main(["analyze", "The cat sat on the mat.", "--out", str(out), "--save-trace", "-q"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert err.startswith("error: out of GPU memory while capturing self layer 3") and err.count("\n") == 1
    assert not out.exists() or not any(out.iterdir())


def test_cli_device_and_dtype_errors(tmp_path, capsys, monkeypatch):
    from attnscope.cli import main

    _fake_gpus(monkeypatch, 0)
    for args, needle in [(["analyze", "hi", "--device", "cuda"], "--device cuda: no CUDA device is available"),
                         (["analyze", "hi", "--dtype", "int8"], "--dtype 'int8' is not a model precision"),
                         (["explain", "hi", "--device", "tpu"], "--device 'tpu' is not a device"),
                         (["corpus", "in.txt", "--out", str(tmp_path / "s.parquet"), "--device", "cuda:0"],
                          "no CUDA device"),
                         (["prepare", "minilm", "--device", "cuda"], "no CUDA device")]:
        with pytest.raises(SystemExit) as e:
            main(args + ["--out", str(tmp_path / "o")] if args[0] in ("analyze", "explain") else args)
        err = capsys.readouterr().err
        assert e.value.code == 2 and needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_corpus_gpus_per_worker_needs_ray(tmp_path):
    from attnscope.corpus import run_corpus

    src = tmp_path / "in.txt"
    src.write_text("a\nb\n")
    with pytest.raises(InputError, match="--gpus-per-worker is for --engine ray"):
        run_corpus(src, tmp_path / "s.parquet", "minilm", gpus_per_worker=1)
    with pytest.raises(InputError, match="from 0 to 64"):
        run_corpus(src, tmp_path / "s.parquet", "minilm", engine="ray", gpus_per_worker=-1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_every_model_command_takes_device_and_dtype():
    from typer.testing import CliRunner

    from attnscope.cli import app

    commands = [["analyze"], ["report"], ["serve"], ["corpus"], ["explain"], ["ablate"], ["probe"],
                ["counterfactual"], ["dropout"], ["prepare"], ["tasks", "qa"], ["tasks", "align"],
                ["tasks", "whisper-timestamps"], ["tasks", "generation-monitor"], ["tasks", "dialogue"],
                ["tasks", "sentiment", "train"], ["tasks", "sentiment", "analyze"]]
    for cmd in commands:
        r = CliRunner().invoke(app, [*cmd, "--help"], terminal_width=200)
        assert r.exit_code == 0, (cmd, r.output)
        assert "--device" in r.output and "--dtype" in r.output, cmd
    r = CliRunner().invoke(app, ["corpus", "--help"], terminal_width=200)
    assert "--gpus-per-worker" in r.output


# ---------------------------------------------------------------------------- the GPU benchmark, on the CPU
def test_bench_gpu_runs_small_on_cpu(tmp_path):
    """benchmarks/bench_gpu.py --device cpu --small end to end (so the GPU script cannot rot): every case
    timed, and its self-check (statistics against a float64 recomputation from the model's q/k) passed."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(script), "--device", "cpu", "--small", "--threads", "1", "--json",
                        str(out)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["ok"] and all(c["ok"] for c in res["self_check"].values())
    cases = {(row["model"], row["case"]) for row in res["rows"]}
    assert cases == {("minilm", c) for c in ("plain", "eager_stats", "stats", "full_1layer")} | \
        {("smollm2", c) for c in ("plain", "stats_all", "full_head", "pooled")}
    assert all(row["seconds"] > 0 for row in res["rows"])
    assert "self-check minilm: passed" in r.stdout and "stats_all" in r.stdout


def test_corpus_manifest_records_the_dtype(tmp_path):
    """bf16 statistics differ from float32 ones: the corpus manifest (what a resumed run must match)
    records the model's dtype."""
    import json

    from attnscope.corpus import run_corpus
    from attnscope.models import load_model

    src = tmp_path / "in.txt"
    src.write_text("the cat sat\na dog ran\n")
    res = run_corpus(src, tmp_path / "s.parquet", load_model("minilm", dtype="bfloat16"), keep_parts=True)
    assert res.n_texts == 2
    (manifest,) = tmp_path.rglob("manifest.json")
    assert json.loads(manifest.read_text())["dtype"] == "bfloat16"
