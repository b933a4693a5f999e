"""benchmarks/run_bench.py runs end to end at tiny sizes and writes valid JSON (no timing asserts)."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch
from segment_anything.modeling.image_encoder import ImageEncoderViT

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def bench():
    return _load("run_bench")


@pytest.fixture(scope="module")
def lib():
    return _load("bench_lib")


@pytest.mark.slow
def test_smoke_run_writes_json_and_markdown(bench, tmp_path):
    out = tmp_path / "bench"
    bench.main(["--out", str(out), "--quick", "--encoder", "vit_tiny", "--hw", "32", "--depth", "2",
                "--datasets", "acdc", "--slices", "1", "--no-subprocess"])
    report = json.loads((out / "bench.json").read_text())
    for key in ("machine", "matmul_peak_tflops", "encoder_throughput", "step_vs_baseline", "decoder_variants", "cached_vs_online",
                "memory", "make", "dtype_choice", "command", "schedule"):
        assert key in report, key
    assert "errors" not in report, report.get("errors")
    assert report["complete"] and report["step_vs_baseline"]["speedup"] > 0
    acdc = report["cached_vs_online"]["acdc"]
    assert {"online", "cached", "floor", "floor_batch1"} <= set(acdc["steps"])
    assert acdc["flop_bound_online_over_cached"] >= 1
    assert "not measured" in report["make"]["note"]
    assert [r["variant"].split(":")[0] for r in report["decoder_variants"]][0] == "paper"
    fused, literal = report["decoder_variants"][2], report["decoder_variants"][0]
    assert fused["gflop"] < literal["gflop"]  # the fused upsample-convolutions do less arithmetic
    est = report["memory"]["estimates"]["acdc"]  # at this size the slope is within the allocation noise
    assert {"bytes_per_sample_full_depth_gb", "fixed_gb", "online_extra_gb"} <= set(est)
    assert all(f"{m} largest batch in {c}" in est for m in ("online", "cached") for c in bench.CAPACITIES)
    assert not any(p.name.startswith("_bench_work_") for p in out.iterdir())  # work files removed
    assert "Speed-up" in (out / "bench.md").read_text()


@pytest.mark.parametrize("hw", [(64, 64), (176, 176), (256, 240)])
def test_sam_flop_count_matches_torch_counter(lib, hw):
    """The analytic count of SAM's own forward agrees with torch's FlopCounterMode (matmuls + convs)."""
    from torch.utils.flop_counter import FlopCounterMode

    from sam3dlib.modeling.encoders import build_image_encoder

    vit = build_image_encoder("vit_tiny", hw).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        vit(torch.zeros(1, 3, *hw))
    analytic = lib.vit_flops_per_slice("vit_tiny", hw, fast=False)
    assert analytic == pytest.approx(counter.get_total_flops(), rel=0.02)


def test_fast_flops_smaller_where_windows_are_padded(lib):
    assert lib.vit_flops_per_slice("vit_b", (64, 64), True) < 0.3 * lib.vit_flops_per_slice("vit_b", (64, 64), False)
    assert lib.vit_flops_per_slice("vit_b", (224, 224), True) == lib.vit_flops_per_slice("vit_b", (224, 224), False)


def test_tensor_peak_counts_live_bytes_on_cpu(lib):
    def work():
        a = torch.empty(10_000_000, dtype=torch.uint8)
        b = torch.empty(5_000_000, dtype=torch.uint8)
        del a
        c = torch.empty(7_000_000, dtype=torch.uint8)
        del b, c

    assert lib.tensor_peak_bytes(work, torch.device("cpu"), resident_bytes=1_000) == 15_001_000


def test_fit_batch_linear(lib):
    fit = lib.fit_batch({1: 3_000, 3: 7_000}, capacity=21_000)
    assert fit["bytes_per_sample"] == 2_000 and fit["fixed_bytes"] == 1_000 and fit["largest_batch"] == 10


def test_unknown_dataset_is_a_clear_error(bench, tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        bench.main(["--out", str(tmp_path), "--datasets", "nope", "--no-subprocess"])


@pytest.mark.parametrize("fast", [True, False])
def test_encoder_throughput_runs_the_attention_it_names(lib, monkeypatch, fast):
    """Item 3's variants time fast attention only where the label says so (SAM's own otherwise)."""
    from sam3dlib.modeling.fast_attention import fast_attention_enabled

    seen = []

    def fake_encode(encoder, volume, chunk, dtype):
        assert isinstance(encoder, ImageEncoderViT)  # the segment-anything encoder, patched in place
        seen.append(fast_attention_enabled(encoder))
        return torch.zeros(1)

    monkeypatch.setattr(lib, "encode_slices", fake_encode)
    lib.run_step_spec(lib.StepSpec("encoder", encoder="vit_tiny", hw=(32, 32), device="cpu", slices=1, reps=1,
                                   warmup=False, fast_attention=fast, reuse_host_memory=False))
    assert seen == [fast]


def test_step_is_the_trainers_update_with_the_configs_values(lib, monkeypatch):
    """The timed step is training.step.decoder_update with the step config's clip, optimizer and loss."""
    from sam3dlib.study.registry import get_config
    from sam3dlib.training import step as training_step

    spec = lib.StepSpec("floor", dataset="synapse", batch=1, depth=1, hw=(32, 32), encoder="vit_tiny", device="cpu",
                        reps=1, reuse_host_memory=False)
    paper, config = get_config("table1_synapse", "paper"), lib.step_config(spec)
    for key in ("grad_clip", "optimizer", "lr", "momentum", "nesterov", "weight_decay", "batch_dice", "squared_dice"):
        assert getattr(config, key) == getattr(paper, key), key
    calls = []

    def spy(net, features, target, optimizer, loss_fn, grad_clip, dtype=None):
        calls.append((optimizer, loss_fn, grad_clip))
        return training_step.decoder_update(net, features, target, optimizer, loss_fn, grad_clip, dtype)

    monkeypatch.setattr(lib, "decoder_update", spy)
    monkeypatch.setattr(lib, "step_config", lambda _: config.replace(grad_clip=3.0, momentum=0.5))
    lib.run_step_spec(spec)
    assert len(calls) == 2  # the warm-up step and the timed one
    optimizer, loss_fn, grad_clip = calls[-1]
    assert grad_clip == 3.0 and optimizer.defaults["momentum"] == 0.5  # taken from the config, not constants
    assert loss_fn.loss.batch_dice is True  # Synapse trains with Dice over the batch
