"""Shared building blocks."""

from __future__ import annotations

import pytest
import torch

from torch import nn

from vitzoo.layers import DepthwiseConv2d, GroupedPointwiseConv1d, map_to_tokens, tokens_to_map, trunc_normal_init


def test_depthwise_conv_tokens_equal_maps():
    conv = DepthwiseConv2d(6, 5)
    x = torch.randn(2, 6, 4, 7)
    tokens = x.flatten(2).transpose(1, 2)
    torch.testing.assert_close(conv.tokens(tokens, (4, 7)), conv(x).flatten(2).transpose(1, 2))
    assert conv.weight.shape == (6, 1, 5, 5) and conv(x).shape == x.shape
    with pytest.raises(ValueError, match="odd"):
        DepthwiseConv2d(6, 4)


@pytest.mark.parametrize("batch", [1, 3])
def test_tokens_to_map_is_a_channels_last_view_that_convs_keep(batch):
    """No copy in either direction, for any batch (a batch of one is where transpose+reshape loses the layout), and
    a depthwise conv on the view answers in channels-last, so its tokens come back without a copy either."""
    tokens = torch.randn(batch, 4 * 7, 6)
    image = tokens_to_map(tokens, (4, 7))
    assert image.shape == (batch, 6, 4, 7) and image.data_ptr() == tokens.data_ptr()
    assert image.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(image, tokens.transpose(1, 2).reshape(batch, 6, 4, 7), atol=0, rtol=0)
    out = DepthwiseConv2d(6, 3)(image)
    assert out.is_contiguous(memory_format=torch.channels_last)
    back = map_to_tokens(out)
    assert back.is_contiguous() and back.data_ptr() == out.data_ptr()
    nchw = torch.randn(batch, 6, 4, 7)  # a stem's NCHW output: one copy into dense tokens
    torch.testing.assert_close(map_to_tokens(nchw), nchw.flatten(2).transpose(1, 2), atol=0, rtol=0)
    assert map_to_tokens(nchw).is_contiguous()


def test_trunc_normal_init_touches_only_the_requested_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.Conv2d(8, 256, 3), nn.LayerNorm(256))
    conv_before = model[1].weight.clone()
    model.apply(trunc_normal_init(std=0.02))
    linear = model[0].weight
    assert abs(linear.std().item() - 0.02) < 0.0005                # timm cuts at ±2 absolute: N(0, .02) as is
    assert abs(linear.mean().item()) < 0.0005
    assert torch.equal(model[0].bias, torch.zeros(256))
    assert torch.equal(model[1].weight, conv_before)               # Conv2d not requested
    assert torch.equal(model[2].weight, torch.ones(256))           # norms keep PyTorch's defaults
    model.apply(trunc_normal_init(types=(nn.Conv2d,)))
    assert not torch.equal(model[1].weight, conv_before) and torch.equal(model[1].bias, torch.zeros(256))


def test_trunc_normal_init_skips_meta_tensors():
    with torch.device("meta"):
        layer = nn.Linear(4, 4)
    layer.apply(trunc_normal_init())
    assert layer.weight.is_meta


@pytest.mark.parametrize("batch, length, groups, bias", [(1, 1, 6, True), (3, 1, 3, True), (2, 5, 2, False),
                                                         (4, 7, 1, True)])
def test_grouped_pointwise_conv_equals_conv1d(batch, length, groups, bias):
    """The batched-product form gives nn.Conv1d's output (and gradients) with the same parameters and keys."""
    conv = GroupedPointwiseConv1d(12, 18, groups=groups, bias=bias)
    reference = nn.Conv1d(12, 18, 1, groups=groups, bias=bias)
    reference.load_state_dict(conv.state_dict())
    x = torch.randn(batch, 12, length, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, expected = conv(x), reference(x_ref)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
    out.square().sum().backward()
    expected.square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conv.weight.grad, reference.weight.grad, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"expected \[B, 12, L\]"):
        conv(torch.randn(2, 10, 1))
