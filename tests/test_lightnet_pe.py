"""LightNet's positional encodings (TPE, MD-TPE, cosine MD-LRPE): the first author's outputs (golden), position
dependence, axis order on non-square grids, shape errors, FX tracing."""

from __future__ import annotations

import pytest
import torch
import torch.fx
from torch import nn

from conftest import golden_case
from vitzoo.layers import MdLrpeCosine, MdTpe, Tpe, md_lrpe_cosine

TOL = dict(atol=1e-4, rtol=1e-4)


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _load_golden(module: nn.Module, case) -> None:
    expected = {name: tuple(shape) for name, shape in case.meta["state_dict_keys"]}
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == expected
    module.load_state_dict(case.weights, strict=True)
    assert _num_params(module) == case.meta["num_params"]


def test_tpe_matches_golden():
    case = golden_case("lightnet", "mixer_tpe_1d")
    tpe = Tpe(case.meta["kwargs"]["embed_dim"], case.meta["kwargs"]["num_heads"])
    _load_golden(tpe, case)
    with torch.no_grad():
        torch.testing.assert_close(tpe(case.io["in.x"]), case.io["out.o"], **TOL)


def test_md_tpe_matches_golden():
    case = golden_case("lightnet", "mixer_md_tpe")
    kwargs = case.meta["kwargs"]
    md_tpe = MdTpe(kwargs["embed_dim"], kwargs["num_heads"], dims=kwargs["dims"])
    _load_golden(md_tpe, case)
    x = case.io["in.x"]  # [B, H, W, C]
    batch, height, width, dim = x.shape
    with torch.no_grad():
        out = md_tpe(x.flatten(1, 2), (height, width)).reshape(batch, height, width, dim)
        along_w = md_tpe.tpes[0](x)
        along_h = md_tpe.tpes[1](x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(out, case.io["out.o"], **TOL)
    torch.testing.assert_close(along_w, case.io["out.tpe0_dim-2"], **TOL)
    torch.testing.assert_close(along_h, case.io["out.tpe1_dim-3"], **TOL)


def test_md_lrpe_cosine_matches_golden():
    case = golden_case("lightnet", "mixer_md_lrpe_cosine")
    x, theta = case.io["in.x"], case.io["in.theta"]
    size = tuple(case.meta["kwargs"]["shape"])
    torch.testing.assert_close(md_lrpe_cosine(x, theta, size, num_prefix_tokens=1), case.io["out.o_l1"], **TOL)
    # the golden's prefix-free call took the grid tokens of the same input
    torch.testing.assert_close(md_lrpe_cosine(x[:, :, 1:], theta, size), case.io["out.o_l0"], **TOL)
    assert case.meta["num_params"] == _num_params(MdLrpeCosine(x.shape[-1])) == 0


def _not_a_row_permutation(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when b's tokens (dim -2) are not a permutation of a's: some channel's sorted values differ."""
    return not torch.allclose(a.sort(dim=-2).values, b.sort(dim=-2).values, atol=1e-4)


def test_md_tpe_depends_on_position():
    size = (5, 3)
    md_tpe = MdTpe(8, 2)
    x = torch.randn(2, 15, 8)
    perm = torch.randperm(15)
    with torch.no_grad():
        assert _not_a_row_permutation(md_tpe(x, size), md_tpe(x[:, perm], size))
        # and the same tokens in the same order give the same output (the check above is not noise)
        assert not _not_a_row_permutation(md_tpe(x, size), md_tpe(x.clone(), size))


def test_md_lrpe_depends_on_position():
    size = (3, 5)
    x = torch.randn(2, 2, 15, 8)
    theta = MdLrpeCosine(8).theta
    perm = torch.randperm(15)
    assert _not_a_row_permutation(md_lrpe_cosine(x, theta, size), md_lrpe_cosine(x[:, :, perm], theta, size))


@pytest.mark.parametrize("size", [(3, 7), (7, 3), (1, 5), (4, 4)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_md_tpe_axes_on_non_square_grids(size):
    height, width = size
    md_tpe = MdTpe(8, 2, dims=(-2, -3))
    x = torch.randn(2, height * width, 8)
    grid = x.reshape(2, height, width, 8)
    with torch.no_grad():
        out = md_tpe(x, size)
        # W scan: each row on its own; H scan: each column on its own
        rows = md_tpe.tpes[0](grid)
        cols = torch.stack([md_tpe.tpes[1](grid[:, :, j]) for j in range(width)], dim=2)
    assert out.shape == x.shape
    torch.testing.assert_close(out, (rows + cols).flatten(1, 2), atol=1e-5, rtol=1e-5)


def test_md_tpe_is_causal_along_each_axis():
    height, width = 4, 6
    md_tpe = MdTpe(8, 2)
    x = torch.randn(1, height * width, 8)
    changed = x.clone()
    changed[:, 2 * width + 3] += 1.0  # token (2, 3)
    with torch.no_grad():
        diff = (md_tpe(changed, (height, width)) - md_tpe(x, (height, width))).abs().amax(-1).reshape(height, width)
    reached = diff > 1e-6
    expected = torch.zeros(height, width, dtype=torch.bool)
    expected[2, 3:] = True  # later in the same row (W scan)
    expected[2:, 3] = True  # later in the same column (H scan)
    assert torch.equal(reached, expected)


def test_md_tpe_three_axes():
    size = (2, 3, 4)
    md_tpe = MdTpe(8, 2, dims=(-2, -3, -4))
    x = torch.randn(2, 24, 8)
    with torch.no_grad():
        out = md_tpe(x, size)
        grid = x.reshape(2, *size, 8)
        expected = sum(tpe(grid.movedim(axis, -2)).movedim(-2, axis) for axis, tpe in zip((-2, -3, -4), md_tpe.tpes))
    assert len(md_tpe.tpes) == 3
    torch.testing.assert_close(out, expected.flatten(1, -2))


@pytest.mark.parametrize("size,prefix", [((3, 5), 0), ((5, 2), 2), ((2, 3, 4), 1)], ids=["3x5", "5x2-prefix2", "2x3x4"])
def test_md_lrpe_matches_per_token_angles(size, prefix):
    heads, head_dim = 2, 7
    n = int(torch.tensor(size).prod())
    x = torch.randn(2, heads, prefix + n, head_dim)
    theta = torch.randn(heads, -(-head_dim // len(size)))
    out = md_lrpe_cosine(x, theta, size, num_prefix_tokens=prefix)
    assert out.shape == (2, heads, prefix + n, 2 * head_dim)
    torch.testing.assert_close(out[:, :, :prefix], torch.cat([x[:, :, :prefix], torch.zeros_like(x[:, :, :prefix])], -1))
    for index in range(n):
        # row-major position, first axis outermost
        pos, rest = [], index
        for side in reversed(size):
            pos.insert(0, rest % side)
            rest //= side
        angle = torch.cat([p * theta for p in pos], dim=-1)[:, :head_dim]  # [heads, d]
        token = x[:, :, prefix + index]
        expected = torch.cat([token * angle.cos(), token * angle.sin()], -1)
        torch.testing.assert_close(out[:, :, prefix + index], expected, atol=1e-5, rtol=1e-5)


def test_md_lrpe_is_relative():
    """Dot products of encoded vectors depend only on the position difference per axis."""
    size = (4, 6)
    lrpe = MdLrpeCosine(8)
    q, k = torch.randn(1, 1, 1, 8).expand(1, 1, 24, 8), torch.randn(1, 1, 1, 8).expand(1, 1, 24, 8)
    scores = (lrpe(q, size) @ lrpe(k, size).transpose(-1, -2))[0, 0].reshape(4, 6, 4, 6)
    torch.testing.assert_close(scores[0, 0, 1, 2], scores[2, 3, 3, 5], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(scores[0, 0, 1, 2], scores[0, 0, 2, 1], atol=1e-3)


def test_md_lrpe_module_theta():
    lrpe = MdLrpeCosine(7, 2, base=100.0)
    assert lrpe.theta.shape == (1, 4)
    torch.testing.assert_close(lrpe.theta[0], 100.0 ** (-torch.arange(4.0) / 2))
    assert "theta" in lrpe.state_dict()


@pytest.mark.parametrize("call,match", [
    pytest.param(lambda: MdTpe(8, 2)(torch.randn(2, 14, 8), (3, 5)), r"\[B, 3 \* 5, 8\].*\(2, 14, 8\)", id="md-tpe-n"),
    pytest.param(lambda: MdTpe(8, 2)(torch.randn(2, 15, 6), (3, 5)), r"\[B, 3 \* 5, 8\].*\(2, 15, 6\)", id="md-tpe-c"),
    pytest.param(lambda: MdTpe(8, 2)(torch.randn(2, 5, 3, 8), (5, 3)), r"\(2, 5, 3, 8\)", id="md-tpe-4d"),
    pytest.param(lambda: MdTpe(8, 2, dims=(-2, -4))(torch.randn(2, 15, 8), (3, 5)), r"\[-4\].*\[-3, -2\]",
                 id="md-tpe-dims"),
    pytest.param(lambda: MdTpe(8, 2, dims=(-1,)), r"-1", id="md-tpe-channel-dim"),
    pytest.param(lambda: Tpe(8, 3), r"8.*3", id="tpe-heads"),
    pytest.param(lambda: Tpe(8, 2)(torch.randn(2, 5, 6)), r"\[\.\.\., N, 8\].*\(2, 5, 6\)", id="tpe-c"),
    pytest.param(lambda: md_lrpe_cosine(torch.randn(2, 2, 16, 8), torch.randn(2, 4), (3, 5)),
                 r"\[B, heads, 0 \+ 3 \* 5, d\].*\(2, 2, 16, 8\)", id="lrpe-n"),
    pytest.param(lambda: md_lrpe_cosine(torch.randn(2, 2, 16, 8), torch.randn(2, 4), (3, 5), num_prefix_tokens=2),
                 r"2 \+ 3 \* 5", id="lrpe-prefix"),
    pytest.param(lambda: md_lrpe_cosine(torch.randn(2, 15, 8), torch.randn(2, 4), (3, 5)), r"\(2, 15, 8\)",
                 id="lrpe-3d"),
    pytest.param(lambda: md_lrpe_cosine(torch.randn(2, 2, 15, 8), torch.randn(2, 3), (3, 5)), r"e >= ceil\(8/2\) = 4",
                 id="lrpe-theta-short"),
    pytest.param(lambda: md_lrpe_cosine(torch.randn(2, 2, 15, 8), torch.randn(3, 4), (3, 5)), r"\[1 or 2 heads, e\]",
                 id="lrpe-theta-heads"),
])
def test_shape_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


class _PeOnMap(nn.Module):
    """The encodings as a backbone calls them: the size comes from the map inside forward (Proxies under FX)."""

    def __init__(self, width_offset: int = 0):
        super().__init__()
        self.md_tpe = MdTpe(8, 2)
        self.tpe = Tpe(8, 2)
        self.lrpe = MdLrpeCosine(4)
        self.width_offset = width_offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[2], x.shape[3] + self.width_offset)
        tokens = self.tpe(self.md_tpe(x.flatten(2).transpose(1, 2), size))  # [B, N, 8]
        heads = tokens.unflatten(-1, (2, 4)).transpose(1, 2)  # [B, 2, N, 4]
        return self.lrpe(heads, size, num_prefix_tokens=0)


def test_symbolic_trace():
    model = _PeOnMap().eval()
    graph = torch.fx.symbolic_trace(model)
    for size in [(3, 5), (6, 4)]:
        x = torch.randn(2, 8, *size)
        with torch.no_grad():
            torch.testing.assert_close(graph(x), model(x))
    # the shape check is a leaf: it still runs inside the traced graph
    wrong = torch.fx.symbolic_trace(_PeOnMap(width_offset=1).eval())
    with pytest.raises(ValueError, match=r"3 \* 6"):
        wrong(torch.randn(2, 8, 3, 5))


@pytest.mark.parametrize("module,args", [
    pytest.param(Tpe(8, 2), (torch.randn(2, 5, 8),), id="tpe"),
])
def test_symbolic_trace_plain_module(module, args):
    graph = torch.fx.symbolic_trace(module)
    with torch.no_grad():
        torch.testing.assert_close(graph(*args), module(*args))
        assert graph(torch.randn(3, 4, 7, 8)).shape == (3, 4, 7, 8)
