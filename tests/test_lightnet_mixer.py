"""The LightNet mixer: the author's causal mixer against its golden, the non-causal image layout against its
closed form, order equivariance, prefix tokens, gradients, tracing of the causal path; the non-causal MD-LRPE option
(use_lrpe=True) against its own closed form, its position dependence and its tracing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vitzoo
from vitzoo.mixers.lightnet import LightNetMixer

from conftest import assert_exports_and_compiles, golden_case


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)


def _non_causal_reference(mixer: LightNetMixer, x: torch.Tensor) -> torch.Tensor:
    """Spec §9 term by term: SiLU(q) (softmax_tokens(k)ᵀ v), LayerNorm, σ(gate(x)), o_proj."""
    batch, tokens, dim = x.shape
    q = F.silu(_heads(mixer.q_proj(x), mixer.num_heads))
    k = _heads(mixer.k_proj(x), mixer.num_heads).softmax(dim=2)
    v = _heads(mixer.v_proj(x), mixer.num_heads)
    out = (q @ (k.transpose(-2, -1) @ v)).transpose(1, 2).reshape(batch, tokens, dim)
    out = F.layer_norm(out, (dim,), mixer.norm.weight, mixer.norm.bias, eps=mixer.norm.eps)
    return mixer.o_proj(out * torch.sigmoid(mixer.output_gate(x)))


def _lrpe_angles(size: tuple[int, int], prefix: int, d: int, base: float = 10000.0) -> torch.Tensor:
    """Spec §4.2 in float64: angles concat(row·θ, col·θ)[:d], θ_j = base^(-2j/e), e = ceil(d/2); prefix at 0."""
    e = -(-d // 2)
    theta = base ** (-2 * torch.arange(e, dtype=torch.float64) / e)
    rows, cols = torch.meshgrid(torch.arange(size[0], dtype=torch.float64),
                                torch.arange(size[1], dtype=torch.float64), indexing="ij")
    grid = torch.cat([rows.reshape(-1, 1) * theta, cols.reshape(-1, 1) * theta], dim=-1)[:, :d]
    return torch.cat([torch.zeros(prefix, d, dtype=torch.float64), grid])  # [N, d]


def _non_causal_lrpe_reference(mixer: LightNetMixer, x: torch.Tensor, size, prefix, base=10000.0) -> torch.Tensor:
    """o_t = Σ_s Σ_j SiLU(q)_tj softmax_s(k)_sj cos((p_t - p_s)·θ_j) v_s, written as an N x N score matrix."""
    batch, tokens, dim = x.shape
    q = F.silu(_heads(mixer.q_proj(x), mixer.num_heads)).double()
    k = _heads(mixer.k_proj(x), mixer.num_heads).double().softmax(dim=2)
    v = _heads(mixer.v_proj(x), mixer.num_heads).double()
    angle = _lrpe_angles(size, prefix, mixer.head_dim, base)
    rel = torch.cos(angle[:, None, :] - angle[None, :, :])  # [t, s, d]
    scores = torch.einsum("bhtj,bhsj,tsj->bhts", q, k, rel)
    out = (scores @ v).float().transpose(1, 2).reshape(batch, tokens, dim)
    out = F.layer_norm(out, (dim,), mixer.norm.weight, mixer.norm.bias, eps=mixer.norm.eps)
    return mixer.o_proj(out * torch.sigmoid(mixer.output_gate(x)))


def _causal_reference(mixer: LightNetMixer, x: torch.Tensor) -> torch.Tensor:
    """Spec §3 unrolled: o_t = Σ_{s≤t} exp(k_s) / (1 + Σ_{r≤t} exp k_r) · LRPE(q_t)·LRPE_s ⊗ v_s, in float64."""
    batch, tokens, dim = x.shape
    heads, d = mixer.num_heads, mixer.head_dim
    q = F.silu(_heads(mixer.q_proj(x), heads)).double()
    k = _heads(mixer.k_proj(x), heads).double()
    v = _heads(mixer.v_proj(x), heads).double()
    theta = 10000.0 ** (-2 * torch.arange(d, dtype=torch.float64) / d)
    angle = torch.arange(tokens, dtype=torch.float64)[:, None] * theta
    # [x cos tθ, x sin tθ]·[y cos sθ, y sin sθ] = Σ_j x_j y_j cos((t - s)θ_j)
    rel = torch.cos(angle[:, None, :] - angle[None, :, :])  # [t, s, d]
    out = torch.zeros(batch, heads, tokens, d, dtype=torch.float64)
    for t in range(tokens):
        weight = torch.exp(k[:, :, : t + 1]) / (1 + torch.exp(k[:, :, : t + 1]).sum(dim=2, keepdim=True))
        scores = (q[:, :, t, None, :] * weight * rel[t, : t + 1]).sum(-1)  # [B, heads, s]
        out[:, :, t] = (scores[..., None] * v[:, :, : t + 1]).sum(2)
    out = out.float().transpose(1, 2).reshape(batch, tokens, dim) * torch.sigmoid(mixer.output_gate(x))
    out = (dim ** 0.5) * out / torch.sqrt(out.square().sum(-1, keepdim=True) + 1e-5) * mixer.norm.weight
    return mixer.o_proj(out)


def _randomize(mixer: torch.nn.Module) -> torch.nn.Module:
    """Norm weights and biases away from 1/0, so that a reference ignoring them fails."""
    with torch.no_grad():
        for name, p in mixer.named_parameters():
            if name.startswith("norm."):
                p.add_(0.3 * torch.randn_like(p))
    return mixer


def test_causal_matches_author_golden():
    """xmixers LightNetAttention(32, 2, lrpe_type=4) weights, lrpe.theta included, load by name with no mapping;
    output within 1e-4 in float32."""
    case = golden_case("lightnet", "mixer_lightnet_attention_causal")
    kwargs = case.meta["kwargs"]
    mixer = vitzoo.create_mixer("lightnet", kwargs["embed_dim"], kwargs["num_heads"], causal=True,
                                bias=kwargs["bias"], lrpe_base=kwargs["base"]).eval()
    assert sorted(case.weights) == sorted(mixer.state_dict())
    # the default table is the author's fixed one
    torch.testing.assert_close(mixer.lrpe.theta, case.weights["lrpe.theta"], atol=0, rtol=1e-6)
    mixer.load_state_dict(dict(case.weights))
    x = case.io["in.x"]
    with torch.no_grad():
        out = mixer(x, (4, 4))
        gate = mixer.output_gate(x)
    torch.testing.assert_close(gate, case.io["out.output_gate.out"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, case.io["out.o"], atol=1e-4, rtol=1e-4)
    assert sum(p.numel() for p in mixer.parameters()) == case.meta["num_params"]  # theta is a buffer


@pytest.mark.parametrize("size,prefix", [((3, 5), 0), ((4, 3), 1), ((2, 7), 2)], ids=["3x5", "4x3+cls", "2x7+2"])
def test_non_causal_equals_closed_form(size, prefix):
    mixer = _randomize(LightNetMixer(32, 4))
    x = torch.randn(2, prefix + size[0] * size[1], 32)
    torch.testing.assert_close(mixer(x, size, num_prefix_tokens=prefix), _non_causal_reference(mixer, x),
                               atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("tokens", [5, 13, 20], ids=["n5", "n13", "n20"])
def test_causal_equals_unrolled_recurrence(tokens):
    """Independent of the golden data: odd lengths across the op's chunk boundary (8)."""
    mixer = _randomize(LightNetMixer(32, 2, causal=True))
    x = torch.randn(2, tokens, 32)
    torch.testing.assert_close(mixer(x, (1, tokens)), _causal_reference(mixer, x), atol=1e-5, rtol=1e-4)


def test_non_causal_permutes_with_its_tokens_and_causal_does_not():
    x = torch.randn(2, 1 + 20, 32)
    perm = torch.randperm(21)
    mixer = LightNetMixer(32, 2).eval()
    torch.testing.assert_close(mixer(x[:, perm], (4, 5), num_prefix_tokens=1),
                               mixer(x, (4, 5), num_prefix_tokens=1)[:, perm], atol=1e-5, rtol=1e-4)
    causal = LightNetMixer(32, 2, causal=True).eval()
    moved = causal(x[:, perm], (4, 5), num_prefix_tokens=1) - causal(x, (4, 5), num_prefix_tokens=1)[:, perm]
    assert moved.abs().max() > 1e-3


def test_prefix_tokens_enter_the_global_state():
    """Non-causal: changing only the cls token changes every spatial output; causal: only later ones."""
    x = torch.randn(1, 1 + 12, 32)
    x2 = x.clone()
    x2[:, 0] += 1.0
    mixer = LightNetMixer(32, 2).eval()
    assert (mixer(x, (3, 4), num_prefix_tokens=1) - mixer(x2, (3, 4), num_prefix_tokens=1))[:, 1:].abs().amin() > 0
    x3 = x.clone()
    x3[:, 5] += 1.0
    causal = LightNetMixer(32, 2, causal=True).eval()
    diff = (causal(x, (3, 4), num_prefix_tokens=1) - causal(x3, (3, 4), num_prefix_tokens=1)).abs().amax(-1)
    assert diff[0, :5].max() == 0 and diff[0, 5:].min() > 0


@pytest.mark.parametrize("causal,use_lrpe", [(False, None), (True, None), (False, True)],
                         ids=["non-causal", "causal", "non-causal-lrpe"])
def test_gradients_reach_every_parameter_and_token(causal, use_lrpe):
    mixer = LightNetMixer(32, 2, causal=causal, use_lrpe=use_lrpe)
    x = torch.randn(2, 1 + 3 * 5, 32, requires_grad=True)
    mixer(x, (3, 5), num_prefix_tokens=1).square().mean().backward()
    assert x.grad.abs().amax(-1).min() > 0
    for name, p in mixer.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name


@pytest.mark.parametrize("causal", [False, True], ids=["non-causal", "causal"])
def test_wrong_token_count_names_the_numbers(causal):
    mixer = LightNetMixer(32, 2, causal=causal)
    with pytest.raises(ValueError, match="37 tokens for 1 prefix \\+ a 5x7 map \\(expected 36\\)"):
        mixer(torch.randn(1, 37, 32), (5, 7), num_prefix_tokens=1)


def test_options_and_defaults():
    image, causal = LightNetMixer(32, 2), LightNetMixer(32, 2, causal=True)
    assert image.q_proj.bias is not None and causal.q_proj.bias is None
    assert isinstance(image.norm, torch.nn.LayerNorm) and isinstance(causal.norm, torch.nn.RMSNorm)
    assert image.output_gate[0].out_features == 16
    assert LightNetMixer(32, 2, gate_rank=4).output_gate[0].out_features == 4
    with pytest.raises(ValueError, match="scale=True"):
        LightNetMixer(32, 2, causal=True, scale=True)
    # xgeners' 1/d scaling only acts through the LayerNorm's eps: equal without eps, different with a large one
    x = torch.randn(1, 12, 32)
    plain, scaled = LightNetMixer(32, 2, norm_eps=0.0), LightNetMixer(32, 2, norm_eps=0.0, scale=True)
    scaled.load_state_dict(plain.state_dict())
    torch.testing.assert_close(scaled(x, (3, 4)), plain(x, (3, 4)), atol=1e-4, rtol=1e-4)
    plain.norm.eps = scaled.norm.eps = 1.0
    assert (scaled(x, (3, 4)) - plain(x, (3, 4))).abs().max() > 1e-3


class _Tokens(torch.nn.Module):
    def __init__(self, mixer):
        super().__init__()
        self.mixer = mixer

    def forward(self, x):
        return self.mixer(x, (3, 6), num_prefix_tokens=1)


def test_causal_path_traces_exports_and_compiles():
    """The registry-wide tracing tests build the default (non-causal) mixer; this covers the causal path."""
    model = _Tokens(LightNetMixer(32, 2, causal=True)).eval()
    x = torch.randn(2, 19, 32)
    traced = torch.fx.symbolic_trace(model)
    torch.testing.assert_close(traced(x), model(x))
    assert_exports_and_compiles(model, x)


@pytest.mark.parametrize("size,prefix", [((3, 5), 0), ((4, 3), 1), ((2, 7), 2), ((1, 6), 1)],
                         ids=["3x5", "4x3+cls", "2x7+2", "1x6+cls"])
def test_non_causal_lrpe_equals_closed_form(size, prefix):
    """MD-LRPE on SiLU(q) and on softmax_tokens(k), non-square grids, prefix tokens unrotated (spec §3, §4.2)."""
    mixer = _randomize(LightNetMixer(32, 4, use_lrpe=True))
    x = torch.randn(2, prefix + size[0] * size[1], 32)
    torch.testing.assert_close(mixer(x, size, num_prefix_tokens=prefix),
                               _non_causal_lrpe_reference(mixer, x, size, prefix), atol=1e-5, rtol=1e-4)


def test_non_causal_lrpe_with_odd_head_width_base_and_scale():
    """d = 5: e = 3 features per axis, cut to d; lrpe_base sets θ; xgeners' 1/d scaling composes with LRPE
    (without eps it cancels in the LayerNorm, so the unscaled closed form holds)."""
    mixer = _randomize(LightNetMixer(20, 4, use_lrpe=True, scale=True, lrpe_base=100.0, norm_eps=0.0))
    theta = 100.0 ** (-2 * torch.arange(3, dtype=torch.float64) / 3)
    torch.testing.assert_close(mixer.lrpe.theta.double(), theta[None])
    x = torch.randn(2, 1 + 12, 20)
    torch.testing.assert_close(mixer(x, (3, 4), num_prefix_tokens=1),
                               _non_causal_lrpe_reference(mixer, x, (3, 4), 1, base=100.0), atol=1e-4, rtol=1e-4)


def test_lrpe_makes_the_output_depend_on_position():
    """With MD-LRPE a token permutation no longer just permutes the output; prefix tokens carry no position."""
    x = torch.randn(2, 1 + 20, 32)
    mixer = _randomize(LightNetMixer(32, 2, use_lrpe=True)).eval()
    reference = mixer(x, (4, 5), num_prefix_tokens=1)
    perm = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(20)])
    moved = mixer(x[:, perm], (4, 5), num_prefix_tokens=1) - reference[:, perm]
    assert moved.abs().max() > 1e-3
    # the same tokens read as a 5x4 grid are at other positions
    assert (mixer(x, (5, 4), num_prefix_tokens=1) - reference)[:, 1:].abs().max() > 1e-3
    # as a 1x20 strip, positions differ too
    assert (mixer(x, (1, 20), num_prefix_tokens=1) - reference)[:, 1:].abs().max() > 1e-3
    # a mixer without LRPE with the same weights is the plain layout (theta only adds a buffer)
    plain = LightNetMixer(32, 2).eval()
    plain.load_state_dict({k: v for k, v in mixer.state_dict().items() if k != "lrpe.theta"})
    assert (plain(x, (4, 5), num_prefix_tokens=1) - reference).abs().max() > 1e-3
    with torch.no_grad():
        mixer.lrpe.theta.zero_()  # all angles 0: LRPE(u) = [u, 0], the plain layout again
    torch.testing.assert_close(mixer(x, (4, 5), num_prefix_tokens=1), plain(x, (4, 5), num_prefix_tokens=1),
                               atol=1e-5, rtol=1e-4)


def test_lrpe_options_and_state_dict():
    image, causal = LightNetMixer(32, 2), LightNetMixer(32, 2, causal=True)
    assert not image.use_lrpe and image.lrpe is None and causal.use_lrpe and causal.lrpe.num_axes == 1
    assert "lrpe.theta" not in image.state_dict() and tuple(causal.state_dict()["lrpe.theta"].shape) == (1, 16)
    # the causal table is xmixers' fixed base^(-2j/d), j < d
    torch.testing.assert_close(causal.lrpe.theta[0], 10000.0 ** (-2 * torch.arange(16.0) / 16))
    lrpe = LightNetMixer(32, 2, use_lrpe=True)
    assert sorted(lrpe.state_dict()) == sorted([*image.state_dict(), "lrpe.theta"])
    assert tuple(lrpe.lrpe.theta.shape) == (1, 8) and "use_lrpe=True" in repr(lrpe)
    assert LightNetMixer(32, 2, causal=True, use_lrpe=True).use_lrpe
    with pytest.raises(ValueError, match="use_lrpe=False"):
        LightNetMixer(32, 2, causal=True, use_lrpe=False)
    assert vitzoo.create_mixer("lightnet", 32, 2, use_lrpe=True).use_lrpe


class _Map(torch.nn.Module):
    """As a backbone calls a mixer: the size comes from the map inside forward, a cls token first."""

    def __init__(self, mixer):
        super().__init__()
        self.mixer = mixer
        self.prefix = torch.nn.Parameter(torch.randn(1, 1, mixer.dim))

    def forward(self, x):
        size = (x.shape[2], x.shape[3])
        tokens = torch.cat([self.prefix.expand(x.shape[0], -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
        return self.mixer(tokens, size, num_prefix_tokens=1)


def test_lrpe_path_traces_exports_and_compiles():
    """FX with the size derived from the input (not baked in: a second size runs through the same graph),
    torch.export and torch.compile(fullgraph=True)."""
    model = _Map(LightNetMixer(32, 2, use_lrpe=True)).eval()
    traced = torch.fx.symbolic_trace(model)
    for size in [(3, 6), (5, 4)]:
        x = torch.randn(2, 32, *size)
        torch.testing.assert_close(traced(x), model(x))
    assert_exports_and_compiles(model, torch.randn(2, 32, 3, 6))
    assert_exports_and_compiles(_Tokens(LightNetMixer(32, 2, use_lrpe=True)).eval(), torch.randn(2, 19, 32))
