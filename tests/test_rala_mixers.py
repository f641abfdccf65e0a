"""The RAVLT / MAViT mixers (``rala``, ``mala``, ``rala_softmax``): official parity, closed forms, prefix
tokens, cost in tokens."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import vitzoo
from conftest import golden_case
from vitzoo import ops
from vitzoo.benchmark import count_flops
from vitzoo.models.ravlt import checkpoint_filter_fn

GOLDEN_MIXERS = [
    pytest.param("rala", "mixer", "rala", id="rala"),
    pytest.param("rala", "mixer_vanilla", "rala_softmax", id="rala-softmax"),
    pytest.param("mala", "mixer", "mala", id="mala"),
    pytest.param("mala", "mixer_vanilla", "rala_softmax", id="mala-softmax"),
]


@pytest.mark.parametrize("family,case_name,mixer_name", GOLDEN_MIXERS)
def test_mixer_matches_official(family, case_name, mixer_name):
    """Official-format weights (1×1 conv shapes) through the RAVLT filter; outputs within 1e-5."""
    case = golden_case(family, case_name)
    mixer = vitzoo.create_mixer(mixer_name, **case.meta["kwargs"]).eval()
    assert case.weights["qkvo.weight"].dim() == 4  # the official layout, converted by the filter
    mixer.load_state_dict(checkpoint_filter_fn(dict(case.weights), mixer))
    size = (case.meta["H"], case.meta["W"])
    with torch.no_grad():
        out = mixer(case.io["x_tokens"], size)
    torch.testing.assert_close(out, case.io["out_tokens"], atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in mixer.parameters()) == case.meta["num_params"]


def _reference(mixer, x, size, prefix):
    """Explicit [N, N] weights from the papers' closed forms (rala.md §3-4, mala.md §2); prefix tokens
    unrotated and without LePE, as the mixers document."""
    batch, tokens, dim = x.shape
    heads, head_dim = mixer.num_heads, dim // mixer.num_heads
    scale = head_dim ** -0.5
    q, k, v, gate = mixer.qkvo(x).chunk(4, dim=-1)
    lepe = torch.zeros_like(v)
    image = v[:, prefix:].transpose(1, 2).reshape(batch, dim, *size)
    lepe_map = F.conv2d(image, mixer.lepe.weight, mixer.lepe.bias, padding=2, groups=dim)
    lepe[:, prefix:] = lepe_map.flatten(2).transpose(1, 2)
    q, k, v = (t.reshape(batch, tokens, heads, head_dim).transpose(1, 2) for t in (q, k, v))

    def rotate(t):
        return torch.cat([t[:, :, :prefix], ops.rope_2d_naive(t[:, :, prefix:], size)], dim=2)

    if isinstance(mixer, vitzoo.mixers.rala.RalaSoftmaxMixer):
        weights = (rotate(q) @ rotate(k).transpose(-2, -1) * scale).softmax(-1)
    else:
        q, k = F.elu(q) + 1, F.elu(k) + 1
        rotated = rotate(q) @ rotate(k).transpose(-2, -1)  # (R_i φq_i)·(R_j φk_j)
        plain = q @ k.transpose(-2, -1)  # φq_i·φk_j
        if isinstance(mixer, vitzoo.mixers.mala.MalaMixer):
            z = plain.mean(-1, keepdim=True) * scale
            weights = (1 + 1 / (z + 1e-6)) * scale * rotated / tokens - z / tokens
        else:
            alpha = (q.mean(2, keepdim=True) @ k.transpose(-2, -1) * scale).softmax(-1)  # [B, h, 1, N]
            weights = alpha * rotated / ((alpha * plain).sum(-1, keepdim=True) + 1e-6)
    out = (weights @ v).transpose(1, 2).reshape(batch, tokens, dim)
    return mixer.proj((out + lepe) * gate)


@pytest.mark.parametrize("name", ["rala", "mala", "rala_softmax"])
@pytest.mark.parametrize("size,prefix", [((5, 7), 0), ((6, 4), 1), ((1, 9), 2)], ids=["5x7", "6x4-cls", "1x9-2prefix"])
def test_mixer_equals_closed_form(name, size, prefix):
    mixer = vitzoo.create_mixer(name, dim=32, num_heads=2).double()
    x = torch.randn(2, prefix + size[0] * size[1], 32, dtype=torch.float64)
    expected = _reference(mixer, x, size, prefix)
    # fp64 inputs, but vitzoo.ops.linear_attention accumulates in fp32
    torch.testing.assert_close(mixer(x, size, num_prefix_tokens=prefix), expected, atol=1e-6, rtol=1e-6)


def _phi_inverse(y):
    """x with elu(x) + 1 = y, so a test can hand the mixers chosen kernel features."""
    return torch.where(y > 1, y - 1, torch.log(y))


def test_mala_weights_sum_to_one_without_rope_and_are_magnitude_aware():
    """MALA's defining property (mala.md §2): scaling φ(q) changes the output, unlike normalised
    linear attention, while constant values pass through unchanged when no rotation acts."""
    mixer = vitzoo.create_mixer("mala", dim=16, num_heads=1, eps=0.0).double()
    q = torch.rand(1, 1, 3, 16, dtype=torch.float64) + 0.1
    k = torch.rand(1, 1, 5, 16, dtype=torch.float64) + 0.1
    v = torch.randn(1, 1, 5, 16, dtype=torch.float64)
    no_rotation = lambda t: t  # noqa: E731
    out = mixer.attend(_phi_inverse(q), _phi_inverse(k), v, no_rotation)
    constant = mixer.attend(_phi_inverse(q), _phi_inverse(k), v[:, :, :1].expand_as(v), no_rotation)
    # vitzoo.ops.linear_attention accumulates in fp32 even for fp64 inputs: fp32 tolerances
    torch.testing.assert_close(constant, v[:, :, :1].expand(1, 1, 3, 16), atol=1e-6, rtol=1e-6)
    doubled = mixer.attend(_phi_inverse(2 * q), _phi_inverse(k), v, no_rotation)
    assert not torch.allclose(out, doubled, atol=1e-3)
    # ordinary normalised linear attention cannot see the query's magnitude
    torch.testing.assert_close(ops.linear_attention_naive(q, k, v, eps=0.0),
                               ops.linear_attention_naive(2 * q, k, v, eps=0.0))


def test_rala_alpha_reweights_keys():
    """With all keys equal except one, RALA's α moves weight toward the key the mean query prefers."""
    mixer = vitzoo.create_mixer("rala", dim=8, num_heads=1).double()
    q = torch.full((1, 1, 4, 8), 2.0, dtype=torch.float64)
    k = torch.ones(1, 1, 4, 8, dtype=torch.float64)
    k[0, 0, 3] = 3.0  # φ(k_3) largest along the mean query
    v = torch.eye(4, 8, dtype=torch.float64)[None, None]
    out = mixer.attend(_phi_inverse(q), _phi_inverse(k), v, lambda t: t)
    plain = ops.linear_attention_naive(q, k, v, eps=0.0)
    assert out[0, 0, 0, 3] > plain[0, 0, 0, 3]
    torch.testing.assert_close(out.sum(-1), torch.ones(1, 1, 4, dtype=torch.float64), atol=1e-6, rtol=1e-6)


def test_head_width_must_allow_2d_rope():
    with pytest.raises(ValueError, match="divisible by 4"):
        vitzoo.create_mixer("rala", dim=24, num_heads=4)


def test_complexity_and_cost_in_tokens():
    """fvcore FLOPs at 4x the tokens: x4 for the linear mixers, close to x16 for softmax."""

    class Fixed(nn.Module):
        def __init__(self, mixer, size):
            super().__init__()
            self.mixer, self.size = mixer, size

        def forward(self, image):  # [1, C, H, W] -> tokens
            return self.mixer(image.flatten(2).transpose(1, 2), self.size)

    ratios = {}
    for name in ("rala", "mala", "rala_softmax"):
        mixer = vitzoo.create_mixer(name, dim=32, num_heads=2)
        small, large = (count_flops(Fixed(mixer, (s, s)), (32, s, s)) for s in (16, 32))
        ratios[name] = large / small
    assert vitzoo.mixers.get_mixer_class("rala").complexity == "linear"
    assert vitzoo.mixers.get_mixer_class("mala").complexity == "linear"
    assert vitzoo.mixers.get_mixer_class("rala_softmax").complexity == "quadratic"
    assert ratios["rala"] == pytest.approx(4.0, rel=0.02) and ratios["mala"] == pytest.approx(4.0, rel=0.02)
    assert ratios["rala_softmax"] > 10


def test_count_flops_counts_sdpa():
    class Attention(nn.Module):
        def forward(self, x):  # x: [1, heads=2, N=5, D=8]
            return F.scaled_dot_product_attention(x, x, x)

    assert round(count_flops(Attention(), (2, 5, 8)) * 1e9) == 2 * 5 * 5 * (8 + 8)


@pytest.mark.parametrize("name", ["rala", "mala"])
def test_linear_mixers_work_in_vzvit(name):
    model = timm.create_model("vzvit_tiny", mixer=name, embed_dim=32, depth=2, num_heads=2, img_size=64, num_classes=3)
    out = model(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    out.sum().backward()
    assert model.blocks[0].attn.qkvo.weight.grad is not None
