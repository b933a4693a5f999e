"""The decoder's fused upsampling and channels-last paths equal the literal upsample-then-convolve."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sam3dlib.modeling.decoder import Decoder3D, InstanceNorm3d
from sam3dlib.modeling.losses import sam3d_loss
from sam3dlib.modeling.upsample_conv import conv3d_of_upsampled, phase_weights, upsample_in_plane


@pytest.mark.parametrize("kernel,padding,bias", [((3, 3, 3), 1, True), ((1, 3, 3), (0, 1, 1), False), (1, 0, True)])
def test_conv_of_upsampled_equals_conv_after_upsampling(kernel, padding, bias):
    torch.manual_seed(0)
    conv = nn.Conv3d(5, 3, kernel, padding=padding, bias=bias).double()
    x = torch.randn(2, 5, 3, 4, 6, dtype=torch.float64, requires_grad=True)
    ours = conv3d_of_upsampled(x, conv)
    grads = torch.autograd.grad((ours * ours).sum(), [x, *conv.parameters()])
    ref = conv(upsample_in_plane(x))
    ref_grads = torch.autograd.grad((ref * ref).sum(), [x, *conv.parameters()])
    assert ours.shape == ref.shape == (2, 3, 3, 8, 12)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-11, atol=1e-11)


def test_conv_of_upsampled_keeps_channels_last():
    conv = nn.Conv3d(4, 6, 3, padding=1)
    x = torch.randn(1, 4, 2, 5, 5).contiguous(memory_format=torch.channels_last_3d)
    out = conv3d_of_upsampled(x, conv)
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(out, conv(upsample_in_plane(x)), rtol=1e-5, atol=1e-5)
    assert conv3d_of_upsampled(x.contiguous(), conv).is_contiguous()


def test_phase_weights_sum_the_taps_each_phase_reads():
    w = torch.arange(9.0).view(1, 1, 1, 3, 3)
    phased = phase_weights(w).view(2, 2, 2, 2)  # (row phase, column phase, row tap, column tap)
    # even rows, even columns: taps (k0 | k1 + k2) in both directions
    assert phased[0, 0].tolist() == [[0.0, 1 + 2], [3 + 6, 4 + 5 + 7 + 8]]
    assert phased.sum((2, 3)).flatten().tolist() == [w.sum().item()] * 4  # every tap used once per phase


@pytest.mark.parametrize("conv", [nn.Conv3d(2, 2, 3, padding=1, stride=2), nn.Conv3d(2, 2, 5, padding=2),
                                  nn.Conv3d(2, 2, 3, padding=0)])
def test_conv_of_upsampled_rejects_other_convolutions(conv):
    with pytest.raises(ValueError, match="conv3d_of_upsampled"):
        conv3d_of_upsampled(torch.randn(1, 2, 3, 4, 4), conv)


def test_instance_norm_channels_last_equals_pytorch():
    x = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64)
    cl = x.contiguous(memory_format=torch.channels_last_3d)
    out = InstanceNorm3d(3)(cl)
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(out, F.instance_norm(x), rtol=1e-10, atol=1e-10)


def _step(fused: bool, channels_last: bool, skip: bool, train: bool):
    torch.manual_seed(0)
    dec = Decoder3D(8, 3, skip=skip, fused_upsample=fused, channels_last=channels_last).double().train(train)
    feats = torch.randn(2, 8, 2, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    target = torch.randint(0, 3, (2, 2, 48, 64), generator=torch.Generator().manual_seed(2))
    out = dec(feats)
    loss = sam3d_loss()(out, target) if train else (out * out).mean()
    loss.backward()
    outs = out if isinstance(out, list) else [out]
    return [o.detach() for o in outs], {n: p.grad for n, p in dec.named_parameters()}, dec.state_dict().keys()


@pytest.mark.parametrize("fused,channels_last", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("skip,train", [(True, True), (False, True), (True, False)])
def test_decoder_paths_give_same_outputs_gradients_and_state_dict(fused, channels_last, skip, train):
    ref_outs, ref_grads, ref_keys = _step(False, False, skip, train)
    outs, grads, keys = _step(fused, channels_last, skip, train)
    assert list(keys) == list(ref_keys)
    assert [o.shape for o in outs] == [o.shape for o in ref_outs]
    assert ref_outs[0].shape == (2, 3, 2, 48, 64)
    for o, r in zip(outs, ref_outs):
        torch.testing.assert_close(o, r, rtol=1e-9, atol=1e-9)
    for name, g in grads.items():
        # conv biases in front of an instance norm get a gradient of exactly 0 (rounding noise)
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-7, atol=1e-9, msg=name)
