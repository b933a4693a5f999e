"""SAM3D: a frozen SAM image encoder applied per slice, then a trainable 3D decoder."""
from __future__ import annotations

import contextlib

import torch
from segment_anything.modeling import ImageEncoderViT
from torch import nn

from sam3dlib.modeling.constants import EMBED_CHANNELS, PATCH_SIZE, RANDOM_INIT
from sam3dlib.modeling.decoder import Decoder3D


def autocast_context(device_type: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on ``device_type``, or a no-op when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


def encode_slices(
    encoder: ImageEncoderViT,
    volume: torch.Tensor,
    chunk_size: int = 32,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Embed every slice of a volume with a (frozen) SAM image encoder.

    Args:
        encoder: segment-anything ``ImageEncoderViT`` built for ``H x W`` inputs.
        volume: ``B x C x D x H x W`` normalised intensities (no SAM pixel normalisation).
        chunk_size: slices per encoder call; all ``B*C*D`` slices are batched.
        dtype: run the encoder under autocast with this dtype (e.g. ``torch.bfloat16``).

    Returns:
        ``B x (C*256) x D x H/16 x W/16`` float32 embeddings, modality-major channels.
    """
    if volume.ndim != 5:
        raise ValueError(f"expected a B x C x D x H x W volume, got shape {tuple(volume.shape)}")
    b, c, d, h, w = volume.shape
    slices = volume.reshape(b * c * d, 1, h, w)
    outs = []
    with torch.no_grad(), autocast_context(volume.device.type, dtype):
        for chunk in slices.split(chunk_size):
            outs.append(encoder(chunk.expand(-1, 3, -1, -1)).float())
    emb = torch.cat(outs)  # (b c d) x 256 x h' x w'
    th, tw = emb.shape[-2:]
    emb = emb.view(b, c, d, EMBED_CHANNELS, th, tw).permute(0, 1, 3, 2, 4, 5)
    return emb.reshape(b, c * EMBED_CHANNELS, d, th, tw)


class SAM3D(nn.Module):
    """Frozen SAM ViT slice encoder + lightweight 3D decoder.

    Args:
        encoder (ImageEncoderViT): segment-anything's image encoder, already built at the
            crop size and loaded; it is frozen here.
        decoder (Decoder3D): the trainable decoder.
        in_channels (int): modalities C of the input volume.
        encoder_source (str): checkpoint path and sha256, or ``"random init"``.
        encoder_name (str): registry name of the encoder (``vit_b`` ...).
        encoder_chunk_size (int): slices per encoder call.
        encoder_dtype (torch.dtype | None): autocast dtype for the encoder (bf16 option).

    ``forward`` takes ``B x C x D x H x W`` and returns the decoder's output.
    """

    def __init__(
        self,
        encoder: ImageEncoderViT,
        decoder: Decoder3D,
        *,
        in_channels: int,
        encoder_name: str,
        encoder_source: str = RANDOM_INIT,
        encoder_sha256: str | None = None,
        encoder_chunk_size: int = 32,
        encoder_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.in_channels = in_channels
        self.encoder_name = encoder_name
        self.encoder_source = encoder_source
        self.encoder_sha256 = encoder_sha256
        self.encoder_chunk_size = encoder_chunk_size
        self.encoder_dtype = encoder_dtype
        self.encoder.requires_grad_(False)
        self.encoder.eval()

    @property
    def random_encoder(self) -> bool:
        return self.encoder_sha256 is None

    def train(self, mode: bool = True) -> "SAM3D":
        super().train(mode)
        self.encoder.eval()  # frozen: dropout/norm statistics never switch to training
        return self

    def encode(self, volume: torch.Tensor) -> torch.Tensor:
        """``B x C x D x H x W`` -> ``B x (C*256) x D x H/16 x W/16`` slice embeddings."""
        if volume.ndim != 5 or volume.shape[1] != self.in_channels:
            raise ValueError(
                f"expected B x {self.in_channels} x D x H x W, got shape {tuple(volume.shape)}"
            )
        if volume.shape[-1] % PATCH_SIZE or volume.shape[-2] % PATCH_SIZE:
            raise ValueError(f"H and W must be multiples of {PATCH_SIZE}, got shape {tuple(volume.shape)}")
        return encode_slices(self.encoder, volume, self.encoder_chunk_size, self.encoder_dtype)

    def forward(self, volume: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.decoder(self.encode(volume))

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
