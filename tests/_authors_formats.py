"""The SAM3D authors' file formats, made here for tests (docs/REPRODUCE.md): a reference decoder
with their module names, checkpoints saved the way their trainer saves them, ``.model.pkl``
files, prediction folders and ``dice_pre.txt`` score files.

Written from the documented facts of their formats, not from their code.
"""
from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

TRAINER_DIR = Path("sam3d/3d_fullres/Task002_Synapse/sam3d_trainer_synapse__sam3d_Plansv2.1/fold_0")


class RefBlock(nn.Module):
    """conv1 (3x3x3 conv, IN, LReLU), conv2 (3x3x3 conv, IN), downsample (1x1x1 conv, IN), sum, LReLU,
    then x2 nearest upsampling in-plane."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.InstanceNorm3d(cout), nn.LeakyReLU())
        self.conv2 = nn.Sequential(nn.Conv3d(cout, cout, 3, padding=1), nn.InstanceNorm3d(cout))
        self.downsample = nn.Sequential(nn.Conv3d(cin, cout, 1), nn.InstanceNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.leaky_relu(self.conv2(self.conv1(x)) + self.downsample(x))
        return nn.functional.interpolate(y, scale_factor=(1, 2, 2), mode="nearest")


class RefHead(nn.Module):
    """conv_pred (3x3x3 conv to half the channels, IN, LReLU), segmentation_head (1x1x1 conv)."""

    def __init__(self, cin: int, classes: int) -> None:
        super().__init__()
        self.conv_pred = nn.Sequential(nn.Conv3d(cin, cin // 2, 3, padding=1), nn.InstanceNorm3d(cin // 2),
                                       nn.LeakyReLU())
        self.segmentation_head = nn.Conv3d(cin // 2, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmentation_head(self.conv_pred(x))


class ReferenceDecoder(nn.Module):
    """The authors' decoder as their facts state it: decoder5 (256 x modalities -> 128) ... decoder2
    (-> 16), out1 on decoder2, out2 on decoder3, out3 on decoder4; outputs ``[out1, out2, out3]``."""

    def __init__(self, classes: int, modalities: int = 1) -> None:
        super().__init__()
        self.decoder5 = RefBlock(256 * modalities, 128)
        self.decoder4 = RefBlock(128, 64)
        self.decoder3 = RefBlock(64, 32)
        self.decoder2 = RefBlock(32, 16)
        self.out1 = RefHead(16, classes)
        self.out3 = RefHead(64, classes)
        self.out2 = RefHead(32, classes)

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        d5 = self.decoder5(features)
        d4 = self.decoder4(d5)
        d3 = self.decoder3(d4)
        d2 = self.decoder2(d3)
        return [self.out1(d2), self.out2(d3), self.out3(d4)]


def trainer_checkpoint(state: Mapping[str, torch.Tensor], epoch: int = 412, amp: bool = True) -> dict:
    """The dict their trainer's ``save_checkpoint`` passes to ``torch.save``."""
    params = [torch.nn.Parameter(v.clone()) for v in state.values()]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    tr = [1.2, 0.8, np.float64(0.5)]
    save_this = {
        "epoch": epoch,
        "state_dict": OrderedDict((k, v.cpu()) for k, v in state.items()),
        "optimizer_state_dict": opt.state_dict(),
        "lr_scheduler_state_dict": None,
        "plot_stuff": (tr, list(tr), [], [np.float64(0.61), np.float64(0.7)]),
        "best_stuff": (epoch - 3, np.float64(0.41), np.float64(0.69)),
    }
    if amp:
        save_this["amp_grad_scaler"] = {"scale": 32768.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                        "growth_interval": 2000, "_growth_tracker": 17}
    return save_this


def plans_pickle(num_classes: int, modalities: int = 1, name: str = "sam3d_trainer_synapse") -> dict:
    """The ``.model.pkl`` beside a trainer checkpoint: init args, trainer name and class, plans."""
    plans = OrderedDict(
        num_classes=num_classes - 1, num_modalities=modalities, modalities={i: "CT" for i in range(modalities)},
        normalization_schemes=OrderedDict((i, "CT") for i in range(modalities)), all_classes=list(range(1, num_classes)),
        plans_per_stage={0: {"patch_size": np.array([64, 128, 128]), "current_spacing": np.array([3.0, 0.76, 0.76])},
                         1: {"patch_size": np.array([64, 176, 176]), "current_spacing": np.array([3.0, 0.76, 0.76])}},
        dataset_properties={"intensityproperties": {0: {"mean": np.float64(99.4), "sd": np.float64(39.3)}}},
    )
    init = ("plans.pkl", 0, "/out/fold_0", "/data/Task002_Synapse", True, None, True, True, True)
    return {"init": init, "name": name, "class": f"<class 'sam3d.training.network_training.{name}.{name}'>",
            "plans": plans}


def save_trainer_files(folder: Path, state: Mapping[str, torch.Tensor], num_classes: int, modalities: int = 1,
                       final_state: Mapping[str, torch.Tensor] | None = None) -> Path:
    """``model_best.model`` (+ ``model_final_checkpoint.model``) with their ``.pkl`` files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"model_best.model": state}
    if final_state is not None:
        files["model_final_checkpoint.model"] = final_state
    for name, st in files.items():
        torch.save(trainer_checkpoint(st), folder / name)
        with open(folder / (name + ".pkl"), "wb") as fh:
            pickle.dump(plans_pickle(num_classes, modalities), fh)
    return folder


def zip_folder(folder: Path, target: Path, root: Path | None = None) -> Path:
    """A zip of ``folder`` (member names relative to ``root``, default the folder's parent)."""
    base = root or folder.parent
    with zipfile.ZipFile(target, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(base).as_posix())
    return target


def write_dice_pre(path: Path, rows: Sequence[tuple[str, Mapping[str, float]]], dataset: str) -> Path:
    """A ``dice_pre.txt`` as their scoring scripts append it: per case a line of ``*``, the prediction's
    file name, ``Dice_<class>: 0.1234`` and ``hd_<class>: 1.2345`` lines; then the means."""
    lines = []
    for fname, scores in rows:
        lines += ["*" * 20, fname]
        lines += [f"{k}: {v:.4f}" for k, v in scores.items()]
        dsc = [v for k, v in scores.items() if k.startswith("Dice_")]
        lines.append("DSC:" + str(np.mean(dsc)))
    lines += ["*" * 20, "Mean_Dice"]
    keys = [k for k in rows[0][1] if k.startswith("Dice_")] if rows else []
    lines += [k + str(np.mean([s[k] for _, s in rows])) for k in keys]
    lines += ["*" * 20]
    path.write_text("\n".join(lines) + "\n")
    return path
