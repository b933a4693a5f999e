"""Sliding-window inference with Gaussian blending and mirroring test-time augmentation.

Follows the authors' nnU-Net v1 inference (docs/REFERENCE.md, "Sliding window and mirroring") on
top of :func:`monai.inferers.sliding_window_inference`:

- windows of the training patch with 50% overlap; volumes smaller than the patch are
  zero-padded (centred) and the output is cropped back;
- each window's **softmax** (not its logits) is weighted by a Gaussian importance map
  (sigma = patch/8, centre at ``patch // 2``, maximum 1, zeros replaced by the smallest
  non-zero weight: nnU-Net v1's map, passed to MONAI as ``roi_weight_map``) and the weighted
  sums are divided by the summed weights;
- mirroring is done per window as in nnU-Net v1: every combination of flips of the chosen
  spatial axes (8 for (0, 1, 2)) is predicted, flipped back and averaged with equal weight.

A SAM3D model (frozen 2D encoder + 3D decoder) is not run window by window: its slices are
encoded once per in-plane window position and in-plane flip and the embeddings reused by every
depth window and depth flip (:mod:`sam3dlib.inference.encode_once`), giving the same
probabilities (to float32 rounding) several times faster. Any other predictor, and
``encode_once=False``, takes the plain path: the whole predictor on every window and flip.

One difference remains: MONAI places the windows at multiples of ``patch * (1 - overlap)``
with the last one flush with the far border, whereas nnU-Net spreads the steps evenly
between the two borders. Both cover the volume with at least 50% overlap.
"""
from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from scipy import ndimage

from sam3dlib.inference.encode_once import MIB, memory_bound, plan_case, predict_encoding_once
from sam3dlib.modeling.sam3d import SAM3D
from sam3dlib.utils import values
from sam3dlib.utils.errors import ConfigError

Predictor = Callable[[torch.Tensor], torch.Tensor]


def _check_patch_size(patch_size: Sequence[int]) -> tuple[int, int, int]:
    size = tuple(int(s) for s in patch_size)
    if len(size) != 3 or any(s < 1 for s in size) or any(int(s) != s for s in patch_size):
        raise ValueError(f"patch_size must be three positive integers (D, H, W), got {tuple(patch_size)}")
    return size  # type: ignore[return-value]


@lru_cache(maxsize=8)
def _gaussian(patch_size: tuple[int, int, int]) -> np.ndarray:
    delta = np.zeros(patch_size, dtype=np.float64)
    delta[tuple(s // 2 for s in patch_size)] = 1.0
    g = ndimage.gaussian_filter(delta, sigma=[s / 8 for s in patch_size], mode="constant", cval=0.0)
    g = g / g.max()
    g[g == 0] = g[g > 0].min()
    g = g.astype(np.float32)
    g.flags.writeable = False
    return g


def gaussian_importance_map(patch_size: Sequence[int]) -> torch.Tensor:
    """nnU-Net v1's Gaussian window weights.

    A unit impulse at ``patch_size // 2`` filtered with sigma = patch/8 per axis, scaled to a
    maximum of 1, with exact zeros replaced by the smallest non-zero weight.

    Args:
        patch_size: window size (D, H, W).

    Returns:
        float32 tensor of shape ``patch_size`` (a fresh copy).
    """
    return torch.from_numpy(_gaussian(_check_patch_size(patch_size)).copy())


def mirror_combinations(mirror_axes: Sequence[int] | None) -> list[tuple[int, ...]]:
    """All subsets of ``mirror_axes`` (spatial axes of a case), the empty one first."""
    axes = tuple(mirror_axes or ())
    if any(a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"mirror_axes must be distinct spatial axes among 0, 1, 2 (D, H, W), got {axes}")
    return [c for k in range(len(axes) + 1) for c in itertools.combinations(axes, k)]


class _SoftmaxMirrorPredictor:
    """Window predictor: logits -> softmax, averaged over mirror combinations."""

    def __init__(self, predictor: Predictor, flips: list[tuple[int, ...]]) -> None:
        self.predictor = predictor
        self.flips = flips

    def _logits(self, window: torch.Tensor) -> torch.Tensor:
        out = self.predictor(window)
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"the predictor must return one logits tensor B x K x d x h x w, got {type(out).__name__}"
                " (switch deep supervision off, e.g. model.eval())"
            )
        if out.ndim != 5 or out.shape[0] != window.shape[0] or out.shape[2:] != window.shape[2:]:
            raise ValueError(
                f"the predictor returned shape {tuple(out.shape)} for a window of shape {tuple(window.shape)};"
                " expected B x K x d x h x w with the window's B, d, h, w"
            )
        return out

    def __call__(self, window: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        for axes in self.flips:
            dims = [a + 2 for a in axes]
            x = torch.flip(window, dims) if dims else window
            probs = torch.softmax(self._logits(x).float(), dim=1)
            probs = torch.flip(probs, dims) if dims else probs
            total = probs if total is None else total + probs
        assert total is not None
        return total / len(self.flips)


def check_step_size(step_size: float) -> float:
    """nnU-Net's ``step_size``: the step between windows as a fraction of the patch, in (0, 1]
    (0.5 = 50% overlap; the overlap is ``1 - step_size``).

    Raises:
        ConfigError: not a number in (0, 1].
    """
    step = values.as_float(step_size, "--step-size", ConfigError)
    if not 0.0 < step <= 1.0:
        raise ConfigError(f"--step-size must be in (0, 1] (a fraction of the patch; 0.5 = 50% overlap), got {step_size}")
    return step


def _as_image(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        if not (np.issubdtype(image.dtype, np.floating) or np.issubdtype(image.dtype, np.integer)):
            raise TypeError(f"image must be a real-valued array, got dtype {image.dtype}")
        image = torch.from_numpy(np.ascontiguousarray(image))
    elif not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor or numpy array, got {type(image).__name__}")
    if image.dtype == torch.bool or image.is_complex():
        raise TypeError(f"image must be a real-valued tensor, got dtype {image.dtype}")
    if image.ndim != 4:
        raise ValueError(
            f"image must be one case C x D x H x W, got shape {tuple(image.shape)}"
            + (" (add the channel axis: image[None])" if image.ndim == 3 else "")
        )
    return image.float()


def _embeddings_fit(model: SAM3D, image: torch.Tensor, size: tuple[int, int, int], overlap: float,
                    flips: list[tuple[int, ...]], batch: int, device: torch.device) -> bool:
    """Whether encode-once's embeddings fit :func:`~sam3dlib.inference.encode_once.memory_bound`;
    a ``ResourceWarning`` says so when they do not."""
    need = plan_case(model, image.shape[1:], size, float(overlap), flips, batch).feature_bytes
    bound = memory_bound(device)
    if bound is None or need <= bound:
        return True
    warnings.warn(f"encoding each slice once would hold {need / MIB:.0f} MiB of slice embeddings, over half the "
                  f"memory free on {device} ({bound / MIB:.0f} MiB): running the whole model per window instead "
                  "(the same maps, slower)", ResourceWarning, stacklevel=3)
    return False


def sliding_window_predict(
    predictor: Predictor,
    image: torch.Tensor | np.ndarray,
    patch_size: tuple[int, int, int],
    overlap: float = 0.5,
    mirror_axes: tuple[int, ...] | None = (0, 1, 2),
    sw_batch_size: int = 1,
    device: str | torch.device = "cpu",
    progress: bool = False,
    encode_once: bool = True,
    desc: str | None = None,
) -> torch.Tensor:
    """Softmax probabilities of one preprocessed case by Gaussian-weighted sliding windows.

    Args:
        predictor: maps windows ``B x C x d x h x w`` (on ``device``) to logits
            ``B x K x d x h x w``; e.g. a SAM3D model in eval mode. Called under ``no_grad``.
        image: one case ``C x D x H x W`` (tensor or array; cast to float32).
        patch_size: window size (D, H, W), the training patch (``spec.patch_size``).
        overlap: fraction of overlap between neighbouring windows. Defaults to 0.5.
        mirror_axes: spatial axes (0, 1, 2 = D, H, W) whose flip combinations are averaged;
            None or () for no mirroring. Defaults to (0, 1, 2), i.e. 8 predictions per window.
        sw_batch_size: windows per predictor call. Defaults to 1.
        device: where the predictor runs; the stitched output is kept on the CPU.
            Defaults to "cpu".
        progress: show a progress bar over windows (with an ETA). Defaults to False.
        encode_once: for a :class:`~sam3dlib.modeling.sam3d.SAM3D` predictor, encode each slice
            once per in-plane window and flip (:mod:`sam3dlib.inference.encode_once`); False
            runs the whole model on every window (the reference path). Other predictors always
            take the plain path. Defaults to True.
        desc: label of the progress bar (e.g. the case).

    Returns:
        float32 CPU tensor ``K x D x H x W`` of probabilities (summing to 1 over K).

    Raises:
        ValueError / TypeError: for a bad image shape or dtype, patch size, overlap, mirror axes,
            or a predictor output of the wrong shape.
    """
    x = _as_image(image)
    size = _check_patch_size(patch_size)
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if int(sw_batch_size) < 1:
        raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size}")
    flips = mirror_combinations(mirror_axes)
    device = torch.device(device)
    weights = gaussian_importance_map(size).to(device)
    if encode_once and isinstance(predictor, SAM3D) and _embeddings_fit(predictor, x, size, overlap, flips,
                                                                         int(sw_batch_size), device):
        return predict_encoding_once(predictor, x, size, float(overlap), flips, weights, int(sw_batch_size), device,
                                     progress, desc)
    wrapped = _SoftmaxMirrorPredictor(predictor, flips)
    with torch.no_grad():
        out = sliding_window_inference(
            x[None],
            roi_size=size,
            sw_batch_size=int(sw_batch_size),
            predictor=wrapped,
            overlap=float(overlap),
            mode="gaussian",  # unused: roi_weight_map (nnU-Net's map) always applies after padding
            padding_mode="constant",
            cval=0.0,
            sw_device=device,
            device=torch.device("cpu"),
            progress=progress,
            roi_weight_map=weights,
        )
    return torch.as_tensor(out)[0].float().contiguous()

