"""The InLine and CSwin mixers: parity with the official mixers and blocks, and their own semantics."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import vitzoo
from conftest import golden_case
from vitzoo import ops
from vitzoo.mixers.inline import InLineMixer, injective_linear_attention
from vitzoo.models import inline_cswin, inline_pvt, inline_swin
from vitzoo.models._inline_common import Block

MIXER_TOL = dict(atol=1e-5, rtol=1e-5)


def _under(state_dict: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _through(filter_fn, weights: dict, official_prefix: str, vitzoo_prefix: str) -> dict:
    """Official weights of one module, mapped by the family's checkpoint filter at a block position."""
    mapped = filter_fn({official_prefix + k: v for k, v in weights.items()}, None)
    return _under(mapped, vitzoo_prefix)


@pytest.mark.parametrize("case, size, prefix", [
    pytest.param("mixer_inline_swin", (4, 4), 0, id="swin-window-as-batch"),
    pytest.param("mixer_inline_deit", (4, 4), 1, id="deit-cls-token"),
    pytest.param("mixer_inline_pvt", (4, 6), 0, id="pvt-non-square"),
])
def test_inline_mixer_matches_official(case, size, prefix):
    golden = golden_case("inline", case)
    mixer = InLineMixer(32, 4)
    if case == "mixer_inline_pvt":
        weights = _through(inline_pvt.checkpoint_filter_fn, golden.weights, "block1.0.attn.", "stages.0.blocks.0.attn.")
    else:
        weights = golden.weights
    mixer.load_state_dict(weights)
    with torch.no_grad():
        out = mixer(golden.io["input"], size, num_prefix_tokens=prefix)
    torch.testing.assert_close(out, golden.io["output"], **MIXER_TOL)


def test_inline_cswin_core_matches_official():
    """InLine-CSwin's mixer core: projected qkv and the mean of the raw block input in, before proj out."""
    golden = golden_case("inline", "mixer_inline_cswin")
    mixer = InLineMixer(32, 4, lepe=True, norm_layer=torch.nn.LayerNorm)
    weights = _through(inline_cswin.checkpoint_filter_fn, {f"attns.0.{k}": v for k, v in golden.weights.items()},
                       "stage1.0.", "stages.0.blocks.0.attn.")
    missing = mixer.load_state_dict(weights, strict=False).missing_keys
    assert sorted(missing) == ["norm.bias", "norm.weight", "proj.bias", "proj.weight", "qkv.bias", "qkv.weight"]
    q, k, v = (mixer._heads(t) for t in golden.io["qkv"])
    with torch.no_grad():
        out = mixer.attend(q, k, v, golden.io["x_mean"], (4, 4))
    torch.testing.assert_close(out, golden.io["output"], **MIXER_TOL)


def test_shared_window_mixer_matches_official_swin_window_attention():
    """The official WindowAttention on shifted windows (its -100 mask) equals the shared ``window`` mixer."""
    golden = golden_case("inline", "mixer_swin_window_attention")
    mixer = vitzoo.create_mixer("window", 32, 4, window_size=4, shift_size=2)
    mixer.load_state_dict(inline_swin.checkpoint_filter_fn(golden.weights, None))
    # the official input is the 4 windows of two rolled 8x8 maps; rebuild the maps the mixer takes
    rolled = ops.window_reverse(golden.io["input"], 4, 8, 8)
    image = torch.roll(rolled, shifts=(2, 2), dims=(1, 2)).reshape(2, 64, 32)
    with torch.no_grad():
        out = mixer(image, (8, 8)).view(2, 8, 8, 32)
    out = ops.window_partition(torch.roll(out, shifts=(-2, -2), dims=(1, 2)), 4)
    torch.testing.assert_close(out, golden.io["output"], **MIXER_TOL)


def _check_block(block, golden, size):
    with torch.no_grad():
        out = block.eval()(golden.io["input"], size)
    torch.testing.assert_close(out, golden.io["output"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mixer", ["inline", "window"])
def test_swin_blocks_match_official_shifted_blocks(mixer):
    golden = golden_case("inline", f"block_{'inline_swin' if mixer == 'inline' else 'swin_softmax'}_shifted")
    block = Block(32, 4, mixer, dict(window_size=4, shift_size=2))
    block.load_state_dict(_through(inline_swin.checkpoint_filter_fn, golden.weights, "layers.0.blocks.0.",
                                   "stages.0.blocks.0."))
    _check_block(block, golden, (8, 8))


def test_cswin_inline_block_matches_official():
    golden = golden_case("inline", "block_cswin_inline_global")
    block = Block(32, 2, "inline", dict(lepe=True), norm_in_mixer=True)
    block.load_state_dict(_through(inline_cswin.checkpoint_filter_fn, golden.weights, "stage1.0.",
                                   "stages.0.blocks.0."))
    _check_block(block, golden, (4, 4))


def test_cswin_two_branch_block_matches_official():
    golden = golden_case("inline", "block_cswin_lepe_2branch")
    block = Block(32, 4, "cswin", dict(split_size=2, num_branches=2))
    block.load_state_dict(_through(inline_cswin.checkpoint_filter_fn, golden.weights, "stage3.0.",
                                   "stages.2.blocks.0."))
    _check_block(block, golden, (4, 4))


def test_injective_weights_sum_to_one_and_match_explicit_form():
    """Eq. (5): w_ij = (q_i·k_j − q_i·mean k + 1) / N, built explicitly; every row sums to one."""
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 17, 8), torch.randn(2, 3, 17, 8), torch.randn(2, 3, 17, 5)
    weights = (q @ k.transpose(-2, -1) - q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1) / 17
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 17))
    torch.testing.assert_close(injective_linear_attention(q, k, v), weights @ v, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(injective_linear_attention(q, k, torch.ones(2, 3, 17, 5)), torch.ones(2, 3, 17, 5))


def test_inline_global_cost_is_linear_in_tokens():
    """Counted FLOPs of the global InLine mixer grow 4x when the map grows 4x; the counter does see the
    quadratic work of explicit softmax attention (the naive op), which grows far faster."""

    def flops(name, tokens, side):
        mixer = vitzoo.create_mixer(name, 32, 2).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            mixer(torch.randn(1, tokens, 32), (side, side))
        return counter.get_total_flops()

    small, large = flops("inline", 256, 16), flops("inline", 1024, 32)
    assert 3.9 < large / small <= 4.0
    ops.set_backend("naive")
    try:
        quadratic = flops("softmax", 1024, 32) / flops("softmax", 256, 16)
    finally:
        ops.set_backend("auto")
    assert quadratic > 8


def test_windowed_inline_is_global_inline_per_window():
    """Unshifted windows on a map that tiles: each window is an independent global InLine call."""
    torch.manual_seed(0)
    windowed = InLineMixer(16, 2, window_size=4).eval()
    global_ = InLineMixer(16, 2).eval()
    global_.load_state_dict(windowed.state_dict())
    x = torch.randn(2, 8 * 12, 16)
    with torch.no_grad():
        out = windowed(x, (8, 12))
        windows = ops.window_partition(x.view(2, 8, 12, 16), 4)
        expected = ops.window_reverse(global_(windows, (4, 4)), 4, 8, 12).reshape(2, 96, 16)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_windowed_inline_ignores_the_shift_mask():
    """Like the official code, a shifted InLine window mixes tokens wrapped from the opposite border."""
    torch.manual_seed(0)
    mixer = InLineMixer(16, 2, window_size=4, shift_size=2).eval()
    x = torch.randn(1, 64, 16)
    x2 = x.clone()
    x2[0, 0] += 1.0  # top-left token: after the roll it sits in the bottom-right window with wrapped tokens
    with torch.no_grad():
        y, y2 = mixer(x, (8, 8)), mixer(x2, (8, 8))
    changed = (y - y2).abs().amax(-1)[0].view(8, 8) > 1e-6
    assert changed[7, 7] and changed[6, 6]  # same rolled window, wrapped from the far corner
    assert not changed[3, 3]


def test_inline_prefix_tokens_get_no_local_residual():
    """The cls token's output is the global term alone; spatial tokens add the dynamic convolution."""
    torch.manual_seed(0)
    mixer = InLineMixer(16, 2).eval()
    x = torch.randn(2, 1 + 12, 16)
    q, k, v = mixer._project(x)
    with torch.no_grad():
        out = mixer.attend(q, k, v, x.mean(dim=1), (3, 4), num_prefix_tokens=1)
        global_term = injective_linear_attention(q * mixer.scale, k, v).transpose(1, 2).reshape(2, 13, 16)
    torch.testing.assert_close(out[:, 0], global_term[:, 0])
    assert not torch.allclose(out[:, 1:], global_term[:, 1:], atol=1e-3)


def test_windowed_inline_prefix_tokens_join_every_window_and_see_everything():
    torch.manual_seed(0)
    mixer = InLineMixer(16, 2, window_size=2, shift_size=1).eval()
    x = torch.randn(1, 1 + 20, 16)
    with torch.no_grad():
        out = mixer(x, (4, 5), num_prefix_tokens=1)
        q, k, v = mixer._project(x)
        prefix = injective_linear_attention(q[:, :, :1] * mixer.scale, k, v).transpose(1, 2).reshape(1, 1, 16)
        torch.testing.assert_close(out[:, :1], mixer.proj(prefix), atol=1e-5, rtol=1e-5)
        x2 = x.clone()
        x2[0, 0] += 1.0
        changed = (mixer(x2, (4, 5), num_prefix_tokens=1) - out).abs().amax(-1)[0] > 1e-6
    assert changed.all()  # every window sees the cls token


def test_inline_mixer_rejects_bad_windows():
    with pytest.raises(ValueError, match="needs a window_size"):
        InLineMixer(16, 2, shift_size=2)
    with pytest.raises(ValueError, match="0 <= shift_size < window_size"):
        InLineMixer(16, 2, window_size=4, shift_size=4)


def _stripe_reference(mixer, x, size):
    """CSwin stripes without partitioning: explicit N×N masks per branch and LePE on each stripe crop."""
    batch, tokens, dim = x.shape
    height, width = size
    rows, cols = torch.arange(height).repeat_interleave(width), torch.arange(width).repeat(height)
    heads, head_dim = mixer.num_heads // mixer.num_branches, mixer.head_dim
    share = dim // mixer.num_branches
    qkv = mixer.qkv(x).view(batch, tokens, 3, dim)
    outputs = []
    for branch in range(mixer.num_branches):
        q, k, v = (qkv[:, :, i, branch * share:(branch + 1) * share] for i in range(3))
        stripe = cols // mixer.split_size if branch == 0 else rows // mixer.split_size
        same = stripe[:, None] == stripe[None, :]
        if mixer.num_branches == 1:
            same = torch.ones(tokens, tokens, dtype=torch.bool)
        bias = torch.zeros(tokens, tokens).masked_fill(~same, float("-inf"))
        split = [t.view(batch, tokens, heads, head_dim).transpose(1, 2) for t in (q, k, v)]
        attn = ops.softmax_attention_naive(*split, bias=bias).transpose(1, 2).reshape(batch, tokens, share)
        v_map = v.transpose(1, 2).reshape(batch, share, height, width)
        lepe = torch.zeros_like(v_map)
        starts = range(0, width if branch == 0 else height, mixer.split_size) if mixer.num_branches == 2 else [0]
        for start in starts:
            if mixer.num_branches == 1:
                crop = (slice(None), slice(None))
            elif branch == 0:
                crop = (slice(None), slice(start, start + mixer.split_size))
            else:
                crop = (slice(start, start + mixer.split_size), slice(None))
            lepe[..., crop[0], crop[1]] = mixer.lepe[branch](v_map[..., crop[0], crop[1]])
        outputs.append(attn + lepe.flatten(2).transpose(1, 2))
    return mixer.proj(torch.cat(outputs, dim=-1))


@pytest.mark.parametrize("size, split, branches", [
    pytest.param((6, 6), 3, 2, id="stripes-tile"),
    pytest.param((5, 7), 3, 2, id="stripes-padded"),
    pytest.param((4, 6), 2, 1, id="one-branch"),
])
def test_cswin_mixer_equals_explicit_stripes(size, split, branches):
    torch.manual_seed(0)
    mixer = vitzoo.create_mixer("cswin", 16, 4, split_size=split, num_branches=branches).eval()
    x = torch.randn(2, size[0] * size[1], 16)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x, size), _stripe_reference(mixer, x, size), atol=1e-5, rtol=1e-5)


def test_cswin_mixer_prefix_token_sees_everything_and_stripes_stay_local():
    torch.manual_seed(0)
    mixer = vitzoo.create_mixer("cswin", 16, 2, split_size=2).eval()
    x = torch.randn(1, 1 + 36, 16)
    x2 = x.clone()
    x2[0, 1 + 35] += 1.0  # bottom-right token
    with torch.no_grad():
        y, y2 = mixer(x, (6, 6), num_prefix_tokens=1), mixer(x2, (6, 6), num_prefix_tokens=1)
    changed = (y - y2).abs().amax(-1)[0] > 1e-6
    assert changed[0]  # the cls token
    grid = changed[1:].view(6, 6)
    assert grid[0, 5] and grid[5, 0]  # same column stripe / same row stripe
    assert not grid[0, 0]  # neither


def test_cswin_mixer_rejects_bad_configs():
    with pytest.raises(ValueError, match="num_branches must be 1 or 2"):
        vitzoo.create_mixer("cswin", 16, 2, num_branches=3)
    with pytest.raises(ValueError, match="3 heads do not split into 2 branches"):
        vitzoo.create_mixer("cswin", 24, 3)


def test_vzvit_runs_the_inline_mixer():
    model = vitzoo.create_model("vzvit_tiny", mixer="inline", embed_dim=32, depth=2, num_heads=2, img_size=64)
    assert all(isinstance(b.attn, InLineMixer) for b in model.blocks)
    assert model(torch.randn(1, 3, 64, 96)).shape == (1, 1000)
