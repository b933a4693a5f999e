"""A faster, numerically equivalent attention path for segment-anything's ViT blocks.

:func:`enable_fast_attention` switches every ``Block`` of an ``ImageEncoderViT`` to
:class:`FastBlock` (a subclass; parameters, state-dict keys and results are unchanged):

* **Scaled-dot-product attention.** SAM's decomposed relative-position terms
  ``rel_h[q, k_h] + rel_w[q, k_w]`` do not depend on the keys' content, so they are passed
  to :func:`torch.nn.functional.scaled_dot_product_attention` as an additive
  ``attn_mask``; the fused kernel then replaces SAM's explicit ``softmax(q k^T)`` matrices.
* **No padded window tokens.** SAM pads every windowed block to 14 x 14 tokens. For
  SAM3D's crops (64 to 192 pixels = 4 to 12 tokens a side) the whole slice is one padded
  window, so SAM computes the ``qkv``/``proj`` projections of 196 tokens, 121 of them
  real at 176 x 176 and 16 at 64 x 64. The padded tokens are zeros after ``norm1``, so
  their key and value are exactly the ``qkv`` biases, the same for every padded position;
  only their relative-position terms differ. Their softmax mass is therefore that of one
  merged key ``k = b_k``, ``v = b_v`` with logit ``scale * q.b_k + log sum_p exp(rel_h +
  rel_w)`` over the padded positions ``p``. This is an exact rewrite of SAM's arithmetic
  (not an approximation); outputs at padded query positions are dropped by SAM anyway.
  Arithmetic per ViT-B slice: 24.8 -> 21.5 GFLOP at 176 x 176, 10.4 -> 2.8 GFLOP at 64 x 64.

Slices larger than one window (more than 14 tokens a side) take SAM's own window
partition, with SDPA inside each window.

Tolerance (``tests/test_fast_attention.py``): in float32 the embeddings equal
segment-anything's own forward to within ``atol = 1e-4 * max|embedding|`` (observed
~1e-6 relative); under bfloat16 autocast both paths differ from the float32 result by
bf16 rounding, so the fast bf16 embedding is compared to the float32 one at
``rtol = atol = 0.1`` relative to ``max|embedding|``, the same bound SAM's own bf16
forward meets.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import (
    Attention,
    Block,
    ImageEncoderViT,
    get_rel_pos,
    window_partition,
    window_unpartition,
)

__all__ = ["FastBlock", "enable_fast_attention", "disable_fast_attention", "fast_attention_enabled"]


def _split_qkv(attn: Attention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``B x H x W x C`` -> q, k, v of shape ``B x heads x (H*W) x head_dim``."""
    b, h, w, _ = x.shape
    qkv = attn.qkv(x).reshape(b, h * w, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    return q, k, v


def _rel_terms(
    attn: Attention, q: torch.Tensor, q_hw: tuple[int, int], k_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's ``rel_h`` (B x n x qh x qw x kh) and ``rel_w`` (B x n x qh x qw x kw), in float32.

    ``q_hw`` are the real query rows/columns (a prefix of the key grid ``k_hw`` when the
    window was padded); the tables are those of a ``k_hw`` grid, as in SAM.
    """
    qh, qw = q_hw
    kh, kw = k_hw
    rh = get_rel_pos(kh, kh, attn.rel_pos_h)[:qh].float()  # qh x kh x c
    rw = get_rel_pos(kw, kw, attn.rel_pos_w)[:qw].float()  # qw x kw x c
    b, n, _, c = q.shape
    r_q = q.float().reshape(b, n, qh, qw, c)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, rh)
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, rw)
    return rel_h, rel_w


def _merge_heads(out: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b = out.shape[0]
    return out.permute(0, 2, 1, 3).reshape(b, h, w, -1)


def sdpa_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """SAM's ``Attention.forward`` on an unpadded ``B x H x W x C`` grid, via SDPA."""
    b, h, w, _ = x.shape
    q, k, v = _split_qkv(attn, x)
    mask = None
    if attn.use_rel_pos:
        rel_h, rel_w = _rel_terms(attn, q, (h, w), (h, w))
        mask = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, attn.num_heads, h * w, h * w).to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scale)
    return attn.proj(_merge_heads(out, h, w))


def padded_window_attention(attn: Attention, x: torch.Tensor, window: int) -> torch.Tensor:
    """SAM's one-window attention of a ``B x H x W x C`` grid zero-padded to ``window``², exactly.

    Equivalent to ``window_partition`` (one window) -> ``Attention`` -> ``window_unpartition``,
    but the padded tokens enter as one merged key/value (see the module docstring).
    """
    b, h, w, dim = x.shape
    n_heads = attn.num_heads
    q, k, v = _split_qkv(attn, x)
    head_dim = q.shape[-1]
    bias = attn.qkv.bias
    if bias is None:
        bk = bv = q.new_zeros(n_heads, head_dim)
    else:
        bk = bias[dim : 2 * dim].reshape(n_heads, head_dim)
        bv = bias[2 * dim :].reshape(n_heads, head_dim)
    k = torch.cat([k, bk.to(k.dtype)[None, :, None, :].expand(b, -1, -1, -1)], dim=2)
    v = torch.cat([v, bv.to(v.dtype)[None, :, None, :].expand(b, -1, -1, -1)], dim=2)
    n_pad = window * window - h * w
    if attn.use_rel_pos:
        rel_h, rel_w = _rel_terms(attn, q, (h, w), (window, window))  # ... x window
        real = (rel_h[..., :h, None] + rel_w[..., None, :w]).reshape(b, n_heads, h * w, h * w)
        # log of the sum over padded (kh, kw) of exp(rel_h + rel_w) = all minus real
        total = torch.logsumexp(rel_h, -1) + torch.logsumexp(rel_w, -1)
        inner = torch.logsumexp(rel_h[..., :h], -1) + torch.logsumexp(rel_w[..., :w], -1)
        pad = total + torch.log(-torch.expm1(inner - total))
        mask = torch.cat([real, pad.reshape(b, n_heads, h * w, 1)], dim=-1)
    else:
        mask = q.new_zeros(b, n_heads, h * w, h * w + 1, dtype=torch.float32)
        mask[..., -1] = math.log(n_pad)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype), scale=attn.scale)
    return attn.proj(_merge_heads(out, h, w))


class FastBlock(Block):
    """segment-anything's ``Block`` with the SDPA / unpadded-window attention path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        h, w = x.shape[1], x.shape[2]
        ws = self.window_size
        if ws > 0 and (h > ws or w > ws):  # several windows: SAM's partition, SDPA inside
            windows, pad_hw = window_partition(x, ws)
            x = window_unpartition(sdpa_attention(self.attn, windows), ws, pad_hw, (h, w))
        elif ws > 0 and (h < ws or w < ws):  # one padded window
            x = padded_window_attention(self.attn, x, ws)
        else:  # global attention, or exactly one full window
            x = sdpa_attention(self.attn, x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


def enable_fast_attention(encoder: ImageEncoderViT) -> ImageEncoderViT:
    """Switch every transformer block of ``encoder`` to :class:`FastBlock`, in place.

    Parameters and state-dict keys are unchanged, so checkpoints load either way.

    Args:
        encoder: a segment-anything ``ImageEncoderViT``.

    Returns:
        The same encoder, for chaining.
    """
    if not isinstance(encoder, ImageEncoderViT):
        raise TypeError(f"enable_fast_attention expects a segment-anything ImageEncoderViT, got {type(encoder).__name__}")
    for block in encoder.blocks:
        if type(block) is Block:
            block.__class__ = FastBlock
        elif not isinstance(block, FastBlock):
            raise TypeError(f"unexpected block type {type(block).__name__} in the encoder")
    return encoder


def disable_fast_attention(encoder: ImageEncoderViT) -> ImageEncoderViT:
    """Restore segment-anything's own ``Block.forward`` on every block, in place."""
    for block in encoder.blocks:
        if isinstance(block, FastBlock):
            block.__class__ = Block
    return encoder


def fast_attention_enabled(encoder: ImageEncoderViT) -> bool:
    """True when every block of ``encoder`` uses :class:`FastBlock`."""
    return all(isinstance(b, FastBlock) for b in encoder.blocks)
