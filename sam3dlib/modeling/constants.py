"""Conventions shared by every module.

Axis order: volumes are ``B x C x D x H x W`` (PyTorch's Conv3d order), where D is the
slice (z) axis that the SAM encoder iterates over, and H, W are the in-plane axes the
ViT sees. This equals nnU-Net v1's (z, y, x) array order after ``transpose_forward``.
"""
from __future__ import annotations

#: SAM's ViT turns every 16x16 pixel patch into one token.
PATCH_SIZE = 16
#: Channels of the SAM image-encoder neck, i.e. of one slice embedding.
EMBED_CHANNELS = 256
#: Image side the official SAM checkpoints were trained at (64x64 tokens).
SAM_IMAGE_SIZE = 1024
#: Channel widths of the four residual decoder blocks (the authors' code, ``sam3d.py``; the paper's Fig. 2 draws the blocks without widths).
DECODER_CHANNELS = (128, 64, 32, 16)
#: Deep-supervision loss weights before normalisation (paper section 2).
DEEP_SUPERVISION_WEIGHTS = (1.0, 0.5, 0.25)
#: The ``encoder_weights`` value that asks for the encoder architecture randomly initialised.
RANDOM_WEIGHTS = "random"
#: Recorded in place of a checkpoint hash when the encoder is randomly initialised.
RANDOM_INIT = "random init"
#: Recorded in place of the encoder's name, weights and hash by a model without one (a retrained baseline).
NO_ENCODER = "none"
