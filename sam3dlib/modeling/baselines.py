"""The paper's baselines, retrained under SAM3D's protocol: MONAI's own networks, configured.

Each network takes the input volume directly (no frozen encoder) and trains as a whole; the
trainer treats it exactly like SAM3D's decoder (same data, sampling, augmentation, loss with
deep supervision where the network has it, SGD + poly schedule, evaluation). The builders only
choose MONAI constructor arguments; no network code is copied (docs/TRAINING.md, "Baselines"):

* ``unetr``: :class:`monai.networks.nets.UNETR` as the UNETR paper (Hatamizadeh et al., WACV
  2022) configures it: feature size 16, hidden size 768, MLP 3072, 12 heads, a linear
  (``proj_type="perceptron"``) patch embedding, instance norm, residual blocks; 16^3 patches,
  so every crop side must be a multiple of 16. (MONAI's transformer blocks need ``einops``.)
* ``nnunet``: :class:`monai.networks.nets.DynUNet` with the topology nnU-Net's 3d_fullres
  planner derives from the crop and the target spacing (:func:`plan_dynunet`): 32 filters
  doubling per stage up to 320, strided-convolution downsampling, instance norm, leaky ReLU,
  deep supervision.
* ``swinunetr``: :class:`monai.networks.nets.SwinUNETR` as the Swin UNETR paper (Hatamizadeh
  et al., BrainLes 2021) configures it: feature size 48, depths (2, 2, 2, 2), heads
  (3, 6, 12, 24), window 7; five halvings, so every crop side must be a multiple of 32.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

#: The UNETR paper's configuration (its Table 1 "UNETR", 92.58 M parameters at a 96^3 crop).
UNETR_CONFIG = dict(feature_size=16, hidden_size=768, mlp_dim=3072, num_heads=12, proj_type="perceptron",
                    norm_name="instance", res_block=True, conv_block=True, dropout_rate=0.0)
#: The Swin UNETR paper's configuration (62.2 M parameters).
SWINUNETR_CONFIG = dict(feature_size=48, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24), window_size=7,
                        norm_name="instance", use_checkpoint=False)
#: nnU-Net's 3D U-Net widths: 32 filters in the first stage, doubled per stage, at most 320.
NNUNET_BASE_FILTERS, NNUNET_MAX_FILTERS = 32, 320
#: nnU-Net stops halving an axis once it would fall below this many voxels (feature map >= 4).
NNUNET_MIN_FEATURE_MAP = 4
#: An axis whose spacing is at least this times the finest one is neither pooled nor convolved
#: with a 3-wide kernel yet (nnU-Net's anisotropy rule).
NNUNET_ANISOTROPY = 2.0


@dataclass(frozen=True)
class DynUNetPlan:
    """A DynUNet topology as nnU-Net's planner derives it (sizes in (D, H, W) order).

    Attributes:
        kernel_sizes: one convolution kernel per stage (encoder stages and the bottleneck).
        strides: the downsampling of each stage (the first is 1: full resolution).
        filters: the width of each stage.
        deep_supr_num: auxiliary deep-supervision heads (nnU-Net: every decoder output but the
            two coarsest, whose loss weight it sets to 0); 0 = none.
    """

    kernel_sizes: tuple[tuple[int, int, int], ...]
    strides: tuple[tuple[int, int, int], ...]
    filters: tuple[int, ...]
    deep_supr_num: int

    @property
    def pools(self) -> int:
        return len(self.strides) - 1


def plan_dynunet(patch_size: Sequence[int], spacing: Sequence[float] | None) -> DynUNetPlan:
    """nnU-Net 3d_fullres's network topology for a crop and a target spacing.

    The rule (Isensee et al., Nature Methods 2021, "network topology"; docs/TRAINING.md,
    "Baselines"): starting at the target spacing, every stage halves each axis that keeps at least
    :data:`NNUNET_MIN_FEATURE_MAP` voxels and whose spacing is less than twice the finest spacing
    among such axes (a single such axis only while it has at least 3x that many voxels); an axis
    gets a 3-wide kernel once its spacing is within a factor of two of the finest and keeps it
    (1 before, so anisotropic slices are first convolved in-plane); the bottleneck is 3x3x3.
    One deviation: nnU-Net enlarges the crop to a multiple of the total downsampling; here
    the crop is the experiment's (the same for every model), so an axis of odd size is not
    halved further.

    Args:
        patch_size: the training crop (D, H, W).
        spacing: the target spacing (z, y, x) in mm; None (not recorded, e.g. ACDC): isotropic.

    Returns:
        :class:`DynUNetPlan` for :class:`monai.networks.nets.DynUNet`.

    Raises:
        ValueError: a crop too small for the two downsamplings DynUNet needs.
    """
    size = [int(s) for s in patch_size]
    current = [float(s) for s in (spacing or (1.0, 1.0, 1.0))]
    kernel = [1, 1, 1]
    kernels, strides = [], [(1, 1, 1)]
    while True:
        poolable = [a for a in range(3) if size[a] >= 2 * NNUNET_MIN_FEATURE_MAP and size[a] % 2 == 0]
        if poolable:
            finest_poolable = min(current[a] for a in poolable)
            poolable = [a for a in poolable if current[a] / finest_poolable < NNUNET_ANISOTROPY]
        if not poolable or (len(poolable) == 1 and size[poolable[0]] < 3 * NNUNET_MIN_FEATURE_MAP):
            break
        finest = min(current)
        kernel = [3 if k == 3 or current[a] / finest < NNUNET_ANISOTROPY else 1 for a, k in enumerate(kernel)]
        kernels.append(tuple(kernel))
        strides.append(tuple(2 if a in poolable else 1 for a in range(3)))
        size = [n // 2 if a in poolable else n for a, n in enumerate(size)]
        current = [s * 2 if a in poolable else s for a, s in enumerate(current)]
    kernels.append((3, 3, 3))  # the bottleneck
    if len(strides) < 3:
        raise ValueError(f"crop {tuple(patch_size)} allows {len(strides) - 1} downsampling(s); the nnunet "
                         f"baseline (DynUNet) needs at least 2: make two axes >= {4 * NNUNET_MIN_FEATURE_MAP} voxels")
    filters = tuple(min(NNUNET_BASE_FILTERS * 2**i, NNUNET_MAX_FILTERS) for i in range(len(strides)))
    return DynUNetPlan(tuple(kernels), tuple(strides), filters, max(len(strides) - 1 - 2, 0))


class DeepSupervisedDynUNet(nn.Module):
    """MONAI's DynUNet returning a list of outputs in training (the trainer's deep-supervision form).

    MONAI stacks the main output and its upsampled auxiliary heads into one ``B x (1+n) x K x D x
    H x W`` tensor; the loss (:class:`~sam3dlib.modeling.losses.DeepSupervisionLoss`) takes the
    list ``[main, head 1, ...]`` with weights 1, 1/2, 1/4 ... In eval mode the main output only.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        out = self.net(x)
        if self.training and getattr(self.net, "deep_supervision", False):
            return list(out.unbind(1))
        return out


def build_unetr(num_classes: int, in_channels: int, patch_size: Sequence[int]) -> nn.Module:
    """MONAI UNETR in :data:`UNETR_CONFIG` for crops of ``patch_size`` (every side a multiple of 16)."""
    from monai.networks.nets import UNETR

    return UNETR(in_channels=in_channels, out_channels=num_classes, img_size=tuple(int(s) for s in patch_size),
                 **UNETR_CONFIG)


def build_nnunet(num_classes: int, in_channels: int, patch_size: Sequence[int], spacing: Sequence[float] | None,
                 deep_supervision: bool = True) -> nn.Module:
    """MONAI DynUNet with the topology of :func:`plan_dynunet` (nnU-Net's 3d_fullres plan)."""
    from monai.networks.nets import DynUNet

    plan = plan_dynunet(patch_size, spacing)
    ds = deep_supervision and plan.deep_supr_num > 0
    net = DynUNet(spatial_dims=3, in_channels=in_channels, out_channels=num_classes, kernel_size=plan.kernel_sizes,
                  strides=plan.strides, upsample_kernel_size=plan.strides[1:], filters=plan.filters,
                  norm_name=("INSTANCE", {"affine": True}), act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
                  deep_supervision=ds, deep_supr_num=max(plan.deep_supr_num, 1), res_block=False)
    return DeepSupervisedDynUNet(net)


def build_swinunetr(num_classes: int, in_channels: int, patch_size: Sequence[int]) -> nn.Module:
    """MONAI SwinUNETR in :data:`SWINUNETR_CONFIG` (every crop side a multiple of 32)."""
    from monai.networks.nets import SwinUNETR

    del patch_size  # SwinUNETR adapts to any crop that is a multiple of 32 (checked by the registry)
    return SwinUNETR(in_channels=in_channels, out_channels=num_classes, **SWINUNETR_CONFIG)


class VolumeModel(nn.Module):
    """A network that segments the input volume directly: a retrained baseline.

    It offers what the trainer, the feature source and the predictor use of
    :class:`~sam3dlib.modeling.sam3d.SAM3D`: ``decoder`` is the trainable network (here the whole
    net: what is optimised and checkpointed), ``encode`` passes the volume through unchanged (no
    frozen encoder, so no feature cache), ``crop_hw``, ``in_channels``, ``trainable_parameters``.

    Args:
        network: the MONAI network (``B x C x D x H x W`` -> logits, or a list under deep supervision).
        name: the model registry name (``unetr``, ``nnunet``, ``swinunetr``).
        in_channels: modalities C.
        patch_size: the crop (D, H, W) the network was built for.
    """

    encoder = None
    encoder_source = None
    encoder_sha256 = None
    random_encoder = False

    def __init__(self, network: nn.Module, *, name: str, in_channels: int, patch_size: Sequence[int]) -> None:
        super().__init__()
        self.network = network
        self.name = name
        self.in_channels = int(in_channels)
        self.patch_size = tuple(int(s) for s in patch_size)
        self.crop_hw = self.patch_size[1:]

    @property
    def decoder(self) -> nn.Module:
        """The trainable network (the trainer optimises and checkpoints this module)."""
        return self.network

    def encode(self, volume: torch.Tensor) -> torch.Tensor:
        """The network's input: the ``B x C x D x H x W`` volume itself.

        Raises:
            ValueError: ``volume`` is not ``B x in_channels x D x crop_hw``.
        """
        if volume.ndim != 5 or volume.shape[1] != self.in_channels or tuple(volume.shape[-2:]) != self.crop_hw:
            raise ValueError(f"expected B x {self.in_channels} x D x {self.crop_hw[0]} x {self.crop_hw[1]} "
                             f"(the model's crop), got shape {tuple(volume.shape)}")
        return volume

    def forward(self, volume: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.network(self.encode(volume))

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def round_up(patch_size: Sequence[int], multiple: int) -> tuple[int, int, int]:
    """Each side of ``patch_size`` rounded up to a multiple of ``multiple``."""
    return tuple(int(math.ceil(int(s) / multiple) * multiple) for s in patch_size)  # type: ignore[return-value]


__all__ = ["DeepSupervisedDynUNet", "DynUNetPlan", "NNUNET_MAX_FILTERS", "SWINUNETR_CONFIG", "UNETR_CONFIG",
           "VolumeModel", "build_nnunet", "build_swinunetr", "build_unetr", "plan_dynunet", "round_up"]
