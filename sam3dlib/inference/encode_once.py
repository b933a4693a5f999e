"""Sliding windows over a SAM3D model that encode every slice once.

SAM3D's encoder is frozen and 2D: a slice's embedding depends only on the slice, the
in-plane window it is cut from and the in-plane flips applied to it. Along the depth axis the
windows of one in-plane position overlap (50% at the default step) and a depth flip only
reverses the slices' order, so :func:`predict_encoding_once` encodes each (slice, in-plane
window position, in-plane flip) of a case exactly once, keeps the embeddings while the windows
that use them run, and gives the decoder the same input the whole model would have given it
window by window (:func:`sam3dlib.inference.sliding_window.sliding_window_predict` with
``encode_once=False``, the reference path).

Order of work: in-plane window positions one after the other; at each, the depth windows from
front to back. For every in-plane flip the embeddings of the slices from the current window's
first slice on are kept in one buffer (:class:`SliceFeatures`); slices are encoded in batches
of the model's ``encoder_chunk_size`` ahead of need and dropped once no later window at this
position reads them. The live embeddings therefore never exceed

    in-plane flips x (window depth + (windows per batch - 1) x depth step + chunk) x bytes per slice

whatever the case's size (:func:`feature_memory_bytes`); the prediction says this figure
before it starts. Windows, their Gaussian weights, padding of small volumes and the order of
the mirror terms are those of the reference path (MONAI's window grid), so the probabilities
agree to rounding (float32 sums in another order).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.data.utils import dense_patch_slices
from tqdm.auto import tqdm

from sam3dlib.modeling.sam3d import SAM3D

#: Bytes in a MiB, for the messages.
MIB = 2**20


def scan_interval(size: int, patch: int, overlap: float) -> int:
    """MONAI's step between window starts along one axis: ``int(patch * (1 - overlap))``, at least 1
    (the patch itself when it equals the size)."""
    if size == patch:
        return patch
    return max(1, int(patch * (1 - overlap)))


def centred_padding(shape: Sequence[int], patch: Sequence[int]) -> list[tuple[int, int]]:
    """(before, after) zero padding per axis that brings ``shape`` up to ``patch``: half of the
    shortfall before (rounded down), as MONAI's sliding window pads."""
    pads = []
    for s, p in zip(shape, patch):
        diff = max(p - s, 0)
        pads.append((diff // 2, diff - diff // 2))
    return pads


def window_grid(shape: Sequence[int], patch: Sequence[int], overlap: float) -> dict[tuple[int, int], list[int]]:
    """The reference path's windows, grouped: ``{(h0, w0): [d0, ...]}`` (starts on the padded grid).

    Args:
        shape: padded volume (D, H, W), each at least the patch.
        patch: window size (D, H, W).
        overlap: fraction of the patch shared by neighbouring windows.
    """
    steps = [scan_interval(s, p, overlap) for s, p in zip(shape, patch)]
    grid: dict[tuple[int, int], list[int]] = {}
    for d, h, w in dense_patch_slices(tuple(shape), tuple(patch), steps, return_slice=False):
        grid.setdefault((int(h[0]), int(w[0])), []).append(int(d[0]))
    return {pos: sorted(set(ds)) for pos, ds in grid.items()}


def bytes_per_slice(model: SAM3D) -> int:
    """float32 bytes of one slice's pooled embedding (all modalities) on the decoder's grid."""
    h, w = model.embedding_hw
    return 4 * model.in_channels * model.encoder_spec.channels * h * w


def feature_memory_bytes(model: SAM3D, patch_depth: int, step: int, n_inplane_flips: int, windows_per_batch: int = 1) -> int:
    """Upper bound of the embeddings :func:`predict_encoding_once` holds at once (see the module docstring)."""
    span = patch_depth + (windows_per_batch - 1) * step + model.encoder_chunk_size
    return n_inplane_flips * span * bytes_per_slice(model)


class SliceFeatures:
    """Embeddings of consecutive slices of one in-plane crop (one in-plane flip), kept while needed.

    Args:
        encode: ``C x n x H x W`` slices (of the flipped crop) -> ``C' x n x h x w`` embeddings.
        crop: the ``C x D x H x W`` flipped crop of every slice of the padded case.
        chunk: slices encoded per call beyond what a window needs (the model's chunk size).
    """

    def __init__(self, encode: Callable[[torch.Tensor], torch.Tensor], crop: torch.Tensor, chunk: int) -> None:
        self.encode = encode
        self.crop = crop
        self.chunk = max(1, int(chunk))
        self.start = 0  # first slice held
        self.buffer: torch.Tensor | None = None  # C' x n x h x w for slices start ... start + n

    @property
    def stop(self) -> int:
        return self.start + (0 if self.buffer is None else self.buffer.shape[1])

    def slices(self, lo: int, hi: int) -> torch.Tensor:
        """Embeddings of slices ``lo ... hi - 1`` (``C' x (hi - lo) x h x w``, a view).

        Slices before ``lo`` are dropped (the windows come front to back); missing ones are
        encoded, together with the following ones up to a chunk, in one call.
        """
        if lo < self.start or self.buffer is None:
            self.buffer, self.start = None, lo  # first call (or windows out of order: start afresh)
        elif lo > self.start:
            keep = min(lo, self.stop) - self.start
            self.buffer, self.start = self.buffer[:, keep:], self.start + keep
            if self.start < lo:  # a gap: nothing held is needed any more
                self.buffer, self.start = None, lo
        if hi > self.stop:
            first = self.stop
            last = min(self.crop.shape[1], max(hi, first + self.chunk))
            new = self.encode(self.crop[:, first:last])
            self.buffer = new if self.buffer is None else torch.cat([self.buffer, new], dim=1)
        assert self.buffer is not None
        return self.buffer[:, lo - self.start:hi - self.start]


@dataclass(frozen=True)
class EncodeOncePlan:
    """What a case's prediction will do, stated before it starts."""

    padded_shape: tuple[int, int, int]
    positions: int
    windows: int
    inplane_flips: int
    flips: int
    slices_encoded: int
    feature_bytes: int

    def describe(self) -> str:
        return (f"{self.windows} windows ({self.positions} in-plane x {self.windows // max(1, self.positions)} in depth), "
                f"{self.flips} mirror term(s); {self.slices_encoded} slice encodings "
                f"({self.inplane_flips} in-plane flip(s)); slice embeddings up to "
                f"{self.feature_bytes / MIB:.0f} MiB at once")


def plan_case(model: SAM3D, shape: Sequence[int], patch: Sequence[int], overlap: float,
              flips: Sequence[tuple[int, ...]], windows_per_batch: int = 1) -> EncodeOncePlan:
    """The windows, encoder work and embedding memory of one case of spatial ``shape`` (D, H, W)."""
    padded = tuple(s + a + b for s, (a, b) in zip(shape, centred_padding(shape, patch)))
    grid = window_grid(padded, patch, overlap)
    inplane = {tuple(a for a in f if a) for f in flips}
    step = scan_interval(padded[0], patch[0], overlap)
    return EncodeOncePlan(
        padded_shape=padded,  # type: ignore[arg-type]
        positions=len(grid),
        windows=sum(len(ds) for ds in grid.values()),
        inplane_flips=len(inplane),
        flips=len(flips),
        slices_encoded=len(grid) * len(inplane) * padded[0],
        feature_bytes=feature_memory_bytes(model, patch[0], step, len(inplane), windows_per_batch),
    )


def predict_encoding_once(
    model: SAM3D,
    image: torch.Tensor,
    patch: tuple[int, int, int],
    overlap: float,
    flips: list[tuple[int, ...]],
    weights: torch.Tensor,
    sw_batch_size: int = 1,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str | None = None,
) -> torch.Tensor:
    """Gaussian-weighted sliding-window softmax of ``model`` on one case, each slice encoded once.

    Args:
        model: a SAM3D model in eval mode on ``device``.
        image: one case ``C x D x H x W`` float32 (CPU).
        patch: window size (D, H, W); (H, W) is the model's crop.
        overlap: fraction of overlap between neighbouring windows.
        flips: mirror combinations (spatial axes 0, 1, 2 = D, H, W), averaged in this order.
        weights: the window's importance map ``patch`` (nnU-Net's Gaussian).
        sw_batch_size: windows per decoder call (windows of one in-plane position).
        device: where the model runs; the stitched output stays on the CPU.
        progress: a progress bar over windows (with an ETA); ``desc`` labels it.

    Returns:
        float32 CPU tensor ``K x D x H x W``, the probabilities of the reference path.
    """
    device = torch.device(device)
    c, *shape = image.shape
    pads = centred_padding(shape, patch)
    padded = F.pad(image, [p for ab in reversed(pads) for p in ab]) if any(a or b for a, b in pads) else image
    plan = plan_case(model, shape, patch, overlap, flips, sw_batch_size)
    grid = window_grid(padded.shape[1:], patch, overlap)
    pd, ph, pw = patch
    w_cpu = weights.float().cpu()
    out: torch.Tensor | None = None
    count = torch.zeros(padded.shape[1:], dtype=torch.float32)
    for (h0, w0), d0s in grid.items():
        for d0 in d0s:
            count[d0:d0 + pd, h0:h0 + ph, w0:w0 + pw] += w_cpu
    inplane = list(dict.fromkeys(tuple(a for a in f if a) for f in flips))
    bar = tqdm(total=plan.windows, desc=desc or "windows", disable=not progress, unit="win")
    if progress:
        bar.write(f"{desc + ': ' if desc else ''}{plan.describe()}")

    def encode(slices: torch.Tensor) -> torch.Tensor:
        return model.encode(slices[None].to(device))[0]

    with torch.no_grad():
        for (h0, w0), d0s in grid.items():
            crop = padded[:, :, h0:h0 + ph, w0:w0 + pw]
            feats = {f: SliceFeatures(encode, torch.flip(crop, [a + 1 for a in f]) if f else crop,
                                      model.encoder_chunk_size) for f in inplane}
            for i in range(0, len(d0s), max(1, int(sw_batch_size))):
                batch = d0s[i:i + max(1, int(sw_batch_size))]
                total: torch.Tensor | None = None
                for axes in flips:
                    f = tuple(a for a in axes if a)
                    held = feats[f].slices(batch[0], batch[-1] + pd)
                    x = torch.stack([held[:, d0 - batch[0]:d0 - batch[0] + pd] for d0 in batch])
                    if 0 in axes:
                        x = torch.flip(x, [2])
                    logits = model.decoder(x)
                    if not isinstance(logits, torch.Tensor):
                        raise TypeError("the decoder returned deep-supervision outputs; call model.eval() first")
                    dims = [a + 2 for a in axes]
                    probs = torch.softmax(logits.float(), dim=1)
                    probs = torch.flip(probs, dims) if dims else probs
                    total = probs if total is None else total + probs
                assert total is not None
                total = (total / len(flips) * weights.to(total.device)).cpu()
                if out is None:
                    out = torch.zeros((total.shape[1], *padded.shape[1:]), dtype=torch.float32)
                for p, d0 in zip(total, batch):
                    out[:, d0:d0 + pd, h0:h0 + ph, w0:w0 + pw] += p
                bar.update(len(batch))
    bar.close()
    assert out is not None
    out /= count
    (d_a, d_b), (h_a, h_b), (w_a, w_b) = pads
    D, H, W = out.shape[1:]
    return out[:, d_a:D - d_b, h_a:H - h_b, w_a:W - w_b].contiguous()
