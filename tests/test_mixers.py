"""The token-mixer contract, for every registered mixer, plus the baselines' own semantics."""

from __future__ import annotations

import pytest
import torch

import vitzoo
from vitzoo import ops
from vitzoo.mixers import get_mixer_class

MIXERS = vitzoo.list_mixers()


@pytest.mark.parametrize("name", MIXERS)
def test_mixer_contract(name):
    mixer = vitzoo.create_mixer(name, dim=32, num_heads=2)
    assert type(mixer).complexity in ("linear", "quadratic")
    for size, prefix in [((5, 7), 0), ((6, 4), 1), ((8, 8), 0)]:
        x = torch.randn(2, prefix + size[0] * size[1], 32, requires_grad=True)
        y = mixer(x, size, num_prefix_tokens=prefix)
        assert y.shape == x.shape and torch.isfinite(y).all()
        y.square().mean().backward()
        assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", MIXERS)
def test_mixer_rejects_wrong_token_count(name):
    mixer = vitzoo.create_mixer(name, dim=32, num_heads=2)
    with pytest.raises(ValueError, match="37 tokens for 1 prefix \\+ a 5x7 map"):
        mixer(torch.randn(1, 37, 32), (5, 7), num_prefix_tokens=1)


@pytest.mark.parametrize("name", MIXERS)
def test_mixer_keeps_samples_apart(name):
    """Batch items never mix: perturbing sample 1 leaves sample 0's output unchanged."""
    mixer = vitzoo.create_mixer(name, dim=32, num_heads=2).eval()
    x = torch.randn(2, 24, 32)
    x2 = x.clone()
    x2[1] += 1.0
    torch.testing.assert_close(mixer(x, (4, 6))[0], mixer(x2, (4, 6))[0])


def test_unknown_mixer_lists_close_matches():
    with pytest.raises(ValueError, match="did you mean linear"):
        vitzoo.create_mixer("linaer", dim=8, num_heads=2)


def test_heads_must_divide_dim():
    with pytest.raises(ValueError, match="does not split into 3 heads"):
        vitzoo.create_mixer("softmax", dim=32, num_heads=3)


def test_softmax_mixer_equals_explicit_attention():
    mixer = vitzoo.create_mixer("softmax", dim=16, num_heads=2)
    x = torch.randn(1, 7, 16)
    q, k, v = mixer.qkv(x).view(1, 7, 3, 2, 8).permute(2, 0, 3, 1, 4)
    attn = (q @ k.transpose(-2, -1) / 8 ** 0.5).softmax(-1) @ v
    expected = mixer.proj(attn.transpose(1, 2).reshape(1, 7, 16))
    torch.testing.assert_close(mixer(x, (2, 3), num_prefix_tokens=1), expected)


@pytest.mark.parametrize("feature_map", ["elu", "relu", "identity"])
def test_linear_mixer_feature_maps(feature_map):
    mixer = vitzoo.create_mixer("linear", dim=16, num_heads=2, feature_map=feature_map)
    phi = ops.get_feature_map(feature_map)
    x = torch.randn(2, 12, 16)
    q, k, v = mixer.qkv(x).view(2, 12, 3, 2, 8).permute(2, 0, 3, 1, 4)
    expected = ops.linear_attention_naive(phi(q), phi(k), v, normalize=feature_map != "identity")
    expected = mixer.proj(expected.transpose(1, 2).reshape(2, 12, 16))
    torch.testing.assert_close(mixer(x, (3, 4)), expected, atol=1e-5, rtol=1e-4)


def test_window_mixer_pads_unmasked_like_swin():
    """A 5x7 map with window 4 equals running the op on the zero-padded 8x8 map and cropping."""
    mixer = vitzoo.create_mixer("window", dim=16, num_heads=2, window_size=4, shift_size=2)
    x = torch.randn(1, 35, 16)
    padded = torch.nn.functional.pad(x.view(1, 5, 7, 16), (0, 0, 0, 1, 0, 3)).view(1, 64, 16)
    q, k, v = mixer.qkv(padded).view(1, 64, 3, 2, 8).permute(2, 0, 3, 1, 4)
    out = ops.window_attention_naive(q, k, v, (8, 8), 4, 2, bias=mixer._bias())
    out = out.transpose(1, 2).reshape(1, 8, 8, 16)[:, :5, :7].reshape(1, 35, 16)
    torch.testing.assert_close(mixer(x, (5, 7)), mixer.proj(out), atol=1e-5, rtol=1e-4)


def test_window_mixer_prefix_token_sees_everything():
    mixer = vitzoo.create_mixer("window", dim=16, num_heads=2, window_size=2).eval()
    x = torch.randn(1, 17, 16)
    x2 = x.clone()
    x2[0, 16] += 1.0  # the last spatial token
    y, y2 = mixer(x, (4, 4), num_prefix_tokens=1), mixer(x2, (4, 4), num_prefix_tokens=1)
    assert not torch.allclose(y[0, 0], y2[0, 0])  # the cls token sees it
    torch.testing.assert_close(y[0, 1:3], y2[0, 1:3])  # a far window does not


def test_complexity_declared():
    assert get_mixer_class("softmax").complexity == "quadratic"
    assert get_mixer_class("linear").complexity == "linear"
    assert get_mixer_class("window").complexity == "linear"
