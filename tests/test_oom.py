"""Out-of-memory handling (simulated: no GPU here). Prediction retries with a smaller
sliding-window batch, then on the CPU, with a warning; training says which setting to lower."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _fixtures_train import tiny_config

from sam3dlib.utils.oom import TrainingOOMError, fallback_plan, is_oom_error, run_with_oom_fallback, training_oom_error


def _oom() -> BaseException:
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.parametrize("exc, expected", [
    (torch.cuda.OutOfMemoryError("CUDA out of memory"), True),
    (RuntimeError("CUDA out of memory. Tried to allocate 20 MiB"), True),
    (RuntimeError("MPS backend out of memory"), True),
    (MemoryError(), True),
    (RuntimeError("size mismatch"), False),
    (ValueError("out of memory"), False),
])
def test_is_oom_error(exc, expected):
    assert is_oom_error(exc) is expected


def test_fallback_plan():
    cuda = torch.device("cuda")
    assert fallback_plan(4, "cuda") == [(4, cuda), (2, cuda), (1, cuda), (1, torch.device("cpu"))]
    assert fallback_plan(1, "cpu") == [(1, torch.device("cpu"))]


def test_prediction_retries_smaller_batches_then_cpu():
    calls, moved = [], []

    def predict(batch, device):
        calls.append((batch, device.type))
        if device.type != "cpu":
            raise _oom()
        return "probabilities"

    with pytest.warns(ResourceWarning) as record:
        out = run_with_oom_fallback(predict, 4, "cuda", on_device_change=moved.append)
    assert out == "probabilities"
    assert calls == [(4, "cuda"), (2, "cuda"), (1, "cuda"), (1, "cpu")]
    assert moved == [torch.device("cpu")]
    messages = [str(w.message) for w in record]
    assert len(messages) == 3 and "out of memory" in messages[0]
    assert "sw_batch_size 4 -> 2" in messages[0] and "device cuda -> cpu" in messages[-1]


def test_smaller_batch_that_fits_stops_the_retries():
    calls = []

    def predict(batch, device):
        calls.append(batch)
        if batch > 2:
            raise RuntimeError("CUDA out of memory")
        return batch

    with pytest.warns(ResourceWarning, match="sw_batch_size 8 -> 4"):
        assert run_with_oom_fallback(predict, 8, "cuda") == 2
    assert calls == [8, 4, 2]


def test_other_errors_and_cpu_oom_are_not_hidden():
    def broken(batch, device):
        raise RuntimeError("size mismatch")

    with pytest.raises(RuntimeError, match="size mismatch"):
        run_with_oom_fallback(broken, 4, "cuda")

    def always_oom(batch, device):
        raise _oom()

    with pytest.warns(ResourceWarning), pytest.raises(torch.cuda.OutOfMemoryError):
        run_with_oom_fallback(always_oom, 2, "cuda")


class _StubModel:
    """Stands in for a SAM3D on a GPU (this machine has none): records where it is moved."""

    in_channels = 1
    crop_hw = (8, 8)  # the model records its crop size; prediction windows take it from there

    def __init__(self) -> None:
        self.moves = []
        self.where = torch.device("cuda")

    def to(self, device):
        self.moves.append(torch.device(device).type)
        self.where = torch.device(device)
        return self

    def parameters(self):
        yield torch.zeros(1, device="meta") if self.where.type != "cpu" else torch.zeros(1)


def test_predict_probabilities_falls_back_to_cpu(monkeypatch, tmp_path):
    from sam3dlib.inference import sliding_window
    from sam3dlib.inference.predictor import LoadedRun, predict_probabilities
    from sam3dlib.study.registry import get_config

    seen = []

    def fake_swp(model, image, patch_size, overlap, mirror_axes, sw_batch_size, device, progress, **kwargs):
        seen.append((sw_batch_size, torch.device(device).type))
        if torch.device(device).type != "cpu":
            raise _oom()
        return torch.full((14, *image.shape[1:]), 1 / 14)

    monkeypatch.setattr(sliding_window, "sliding_window_predict", fake_swp)
    model = _StubModel()
    loaded = LoadedRun(tmp_path, model, get_config("table1_synapse", "smoke"), {}, torch.device("cuda"), "best.pt")
    with pytest.warns(ResourceWarning, match="retrying with"):
        probs = predict_probabilities(loaded, np.zeros((1, 4, 8, 8), np.float32))
    assert probs.shape == (14, 4, 8, 8)
    assert seen == [(2, "cuda"), (1, "cuda"), (1, "cpu")]
    assert model.moves == ["cpu", "cuda"]  # to the CPU for the retry, then back for the next case


def test_training_oom_names_the_settings_to_lower(synapse_store, tmp_path, monkeypatch, one_thread, capsys):
    from sam3dlib.cli import main
    from sam3dlib.training import Trainer, train

    def step(*args, **kwargs):
        raise _oom()

    monkeypatch.setattr(Trainer, "step", step)
    cfg = tiny_config(encoder_mode="online", epochs=1, iterations_per_epoch=1)
    with pytest.raises(TrainingOOMError) as info:
        train(cfg, synapse_store, tmp_path / "run", progress=False)
    msg = str(info.value)
    for word in ("out of memory", "batch_size=1", "patch_size", "encoder_mode=cached", "encoder_dtype=bfloat16",
                 "encoder_chunk_size"):
        assert word in msg, word
    assert not (tmp_path / "run" / "checkpoints").exists()

    argv = ["train", "table1_synapse", "--profile", "smoke", "--data", str(synapse_store), "--out",
            str(tmp_path / "cli"), "--no-evaluate", "--no-progress", "--set", "encoder_mode=online",
            "--set", "epochs=1", "--set", "iterations_per_epoch=1", "--set", "patch_size=8,32,32"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "out of memory" in err and "--set batch_size=1" in err and "Traceback" not in err


def test_training_oom_message_for_a_lean_config():
    cfg = tiny_config(batch_size=1, encoder_mode="cached", encoder_dtype="bfloat16", encoder_chunk_size=1)
    msg = str(training_oom_error(_oom(), cfg))
    assert "patch_size" in msg and "batch_size=1" in msg and "--set encoder_mode=cached" not in msg
