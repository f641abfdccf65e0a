"""Shared building blocks."""

from __future__ import annotations

import pytest
import torch

from vitzoo.layers import DepthwiseConv2d, drop_path_rates


def test_depthwise_conv_tokens_equal_maps():
    conv = DepthwiseConv2d(6, 5)
    x = torch.randn(2, 6, 4, 7)
    tokens = x.flatten(2).transpose(1, 2)
    torch.testing.assert_close(conv.tokens(tokens, (4, 7)), conv(x).flatten(2).transpose(1, 2))
    assert conv.weight.shape == (6, 1, 5, 5) and conv(x).shape == x.shape
    with pytest.raises(ValueError, match="odd"):
        DepthwiseConv2d(6, 4)


def test_drop_path_rates_are_linspace():
    torch.testing.assert_close(torch.tensor(drop_path_rates(0.3, 7)), torch.linspace(0, 0.3, 7))
    per_stage = drop_path_rates(0.1, [2, 3])
    assert [len(s) for s in per_stage] == [2, 3] and per_stage[1][-1] == pytest.approx(0.1)
    assert drop_path_rates(0.5, 1) == [0.0]
