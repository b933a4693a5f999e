"""SAM3D: a frozen SAM image encoder applied per slice, then a trainable 3D decoder."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from sam3dlib.modeling.constants import RANDOM_INIT
from sam3dlib.modeling.decoder import Decoder3D
from sam3dlib.modeling.encoders import EncoderSpec, get_encoder_spec


def autocast_context(device_type: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on ``device_type``, or a no-op when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


def prepare_slices(slices: torch.Tensor, input_hw: tuple[int, int] | None = None,
                   intensity: str = "as_is") -> torch.Tensor:
    """``N x 1 x h x w`` slices -> the encoder's ``N x 3 x H x W`` input.

    Resized bilinearly to ``input_hw`` (the encoder input scale; nothing when equal or None),
    then ``intensity``: ``as_is`` (the authors' code feeds the preprocessed slice unchanged) or
    ``minmax`` (each slice scaled to [0, 1]; a constant slice becomes 0), then the grey
    channel repeated 3 times.
    """
    if input_hw is not None and tuple(slices.shape[-2:]) != tuple(input_hw):
        slices = F.interpolate(slices, size=tuple(input_hw), mode="bilinear", align_corners=False)
    if intensity == "minmax":
        flat = slices.flatten(1)
        lo, hi = flat.amin(1).view(-1, 1, 1, 1), flat.amax(1).view(-1, 1, 1, 1)
        slices = (slices - lo) / (hi - lo).clamp_min(1e-8)
    elif intensity != "as_is":
        raise ValueError(f"unknown encoder intensity convention {intensity!r} (as_is, minmax)")
    return slices.expand(-1, 3, -1, -1)


def encode_slices(
    encoder: nn.Module,
    volume: torch.Tensor,
    chunk_size: int = 32,
    dtype: torch.dtype | None = None,
    input_hw: tuple[int, int] | None = None,
    intensity: str = "as_is",
) -> torch.Tensor:
    """Embed every slice of a volume with a (frozen) slice encoder.

    Args:
        encoder: a registry encoder (segment-anything ``ImageEncoderViT`` built for
            ``input_hw``, LiteMedSAM's TinyViT) returning ``N x 256 x h' x w'``.
        volume: ``B x C x D x H x W`` normalised intensities (no SAM pixel normalisation).
        chunk_size: slices per encoder call; all ``B*C*D`` slices are batched.
        dtype: run the encoder under autocast with this dtype (e.g. ``torch.bfloat16``).
        input_hw, intensity: see :func:`prepare_slices` (None, ``as_is``: the authors' input).

    Returns:
        ``B x (C*256) x D x h' x w'`` float32 embeddings, modality-major channels
        (``h' = input H / stride``; the paper: ``H/16``).
    """
    if volume.ndim != 5:
        raise ValueError(f"expected a B x C x D x H x W volume, got shape {tuple(volume.shape)}")
    b, c, d, h, w = volume.shape
    slices = volume.reshape(b * c * d, 1, h, w)
    outs = []
    with torch.inference_mode(), autocast_context(volume.device.type, dtype):
        for chunk in slices.split(chunk_size):
            outs.append(encoder(prepare_slices(chunk, input_hw, intensity)).float())
    emb = torch.cat(outs)  # (b c d) x 256 x h' x w'; made outside inference mode: a normal tensor
    ch, th, tw = emb.shape[-3:]
    emb = emb.view(b, c, d, ch, th, tw).permute(0, 1, 3, 2, 4, 5)
    return emb.reshape(b, c * ch, d, th, tw)


class SAM3D(nn.Module):
    """Frozen slice encoder + lightweight 3D decoder, for crops of one in-plane size.

    Args:
        encoder (nn.Module): a registry encoder already built for ``input_hw`` and loaded; it is
            frozen here.
        decoder (Decoder3D): the trainable decoder (its upsamplings follow the encoder's grid).
        in_channels (int): modalities C of the input volume.
        encoder_name (str): registry name of the encoder (``vit_b``, ``litemedsam`` ...).
        crop_hw (tuple[int, int]): the in-plane crop size the model was built for; training,
            the feature cache and inference read it from here.
        input_hw (tuple[int, int] | None): the encoder's input size (None: ``crop_hw``).
        embedding_pool (int): average-pool the embeddings in-plane by this factor (1: none).
        encoder_source (str): checkpoint path, or ``"random init"``.
        encoder_sha256 (str | None): sha256 of the weights file, None when random.
        encoder_chunk_size (int): slices per encoder call.
        encoder_dtype (torch.dtype | None): autocast dtype for the encoder (bf16 option).

    ``forward`` takes ``B x C x D x H x W`` with ``(H, W) == crop_hw`` and returns the decoder's output.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: Decoder3D,
        *,
        in_channels: int,
        encoder_name: str,
        crop_hw: tuple[int, int],
        input_hw: tuple[int, int] | None = None,
        embedding_pool: int = 1,
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
        self.crop_hw = (int(crop_hw[0]), int(crop_hw[1]))
        self.input_hw = tuple(input_hw) if input_hw is not None else self.crop_hw
        self.embedding_pool = int(embedding_pool)
        self.encoder_source = encoder_source
        self.encoder_sha256 = encoder_sha256
        self.encoder_chunk_size = encoder_chunk_size
        self.encoder_dtype = encoder_dtype
        self.encoder.requires_grad_(False)
        self.encoder.eval()

    @property
    def encoder_spec(self) -> EncoderSpec:
        return get_encoder_spec(self.encoder_name)

    @property
    def random_encoder(self) -> bool:
        return self.encoder_sha256 is None

    @property
    def embedding_hw(self) -> tuple[int, int]:
        """The decoder's input grid ``crop / 2**upsamplings`` (the paper: ``crop / 16``)."""
        from sam3dlib.modeling.encoders import decoder_grid

        return decoder_grid(self.crop_hw, self.decoder.upsamplings)

    def train(self, mode: bool = True) -> SAM3D:
        super().train(mode)
        self.encoder.eval()  # frozen: dropout/norm statistics never switch to training
        return self

    def encode(self, volume: torch.Tensor) -> torch.Tensor:
        """``B x C x D x H x W`` crops -> ``B x (C*256) x D x h x w`` slice embeddings (``embedding_hw``)."""
        return self.pool_embeddings(self.encode_unpooled(volume))

    def encode_unpooled(self, volume: torch.Tensor) -> torch.Tensor:
        """``B x C x D x H x W`` crops -> the encoder's own ``B x (C*256) x D x h' x w'`` grid (no pooling).

        Raises:
            ValueError: ``volume`` is not ``B x in_channels x D x crop_hw``.
        """
        if volume.ndim != 5 or volume.shape[1] != self.in_channels or tuple(volume.shape[-2:]) != self.crop_hw:
            raise ValueError(
                f"expected B x {self.in_channels} x D x {self.crop_hw[0]} x {self.crop_hw[1]} (the model's crop), "
                f"got shape {tuple(volume.shape)}"
            )
        return encode_slices(self.encoder, volume, self.encoder_chunk_size, self.encoder_dtype, self.input_hw,
                             self.encoder_spec.intensity)

    def pool_embeddings(self, emb: torch.Tensor) -> torch.Tensor:
        """The encoder's ``B x C' x D x h' x w'`` grid -> the decoder's ``embedding_hw`` grid.

        Average-pooled by ``embedding_pool``, then area-resampled when the ratio to the crop is no
        power of two; the same for embeddings computed once and reused (e.g. at several pools).
        """
        if self.embedding_pool > 1:
            p = self.embedding_pool
            emb = F.avg_pool3d(emb, (1, p, p))
        if tuple(emb.shape[-2:]) != self.embedding_hw:  # grid/crop ratio no power of two: area-resample
            emb = F.adaptive_avg_pool3d(emb, (emb.shape[2], *self.embedding_hw))
        return emb

    def forward(self, volume: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.decoder(self.encode(volume))

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
