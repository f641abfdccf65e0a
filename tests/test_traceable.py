"""Every mixer, size-taking layer and shape helper traces: torch.fx, torchvision/timm FX feature
extraction, torch.export and torch.compile(fullgraph=True), with the size derived from the input inside
the traced forward (a Proxy under FX), and sizes never baked into the graph."""

from __future__ import annotations

import pytest
import torch
import torch.fx
from timm.layers import create_feature_extractor as timm_feature_extractor
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import vitzoo
from conftest import assert_exports_and_compiles
from vitzoo import ops
from vitzoo.layers import ConvPosEnc, DepthwiseConv2d, LocalConcentration, pad_to_multiple, resize_pos_embed
from vitzoo.mixers import map_to_tokens, tokens_to_map
from vitzoo.models._helpers import check_image_input

DIM, HEADS = 16, 2
# the first size pads the window and stripe mixers (window 4, stripes of 4), the second does not
SIZES = [(7, 9), (8, 12)]
# small settings so that windows and stripes are smaller than the maps
MIXER_KWARGS = {"cswin": dict(split_size=4), "window": dict(window_size=4)}
EXTRA_CASES = [
    pytest.param("window", dict(window_size=4, shift_size=2), 1, id="window-shifted"),
    pytest.param("inline", dict(window_size=4, shift_size=2), 1, id="inline-windowed-shifted"),
    pytest.param("cswin", dict(split_size=4, num_branches=1), 0, id="cswin-one-branch"),
]
CASES = [pytest.param(name, MIXER_KWARGS.get(name, {}), 1, id=name) for name in vitzoo.list_mixers()] + EXTRA_CASES


class MixerOnMap(nn.Module):
    """A mixer as a backbone calls it: the size comes from the map inside forward, optional cls token first."""

    def __init__(self, name: str, kwargs: dict, num_prefix_tokens: int):
        super().__init__()
        self.mixer = vitzoo.create_mixer(name, DIM, HEADS, **kwargs)
        self.num_prefix_tokens = num_prefix_tokens
        self.prefix = nn.Parameter(torch.randn(1, num_prefix_tokens, DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[2], x.shape[3])
        tokens = map_to_tokens(x)
        if self.num_prefix_tokens:
            tokens = torch.cat([self.prefix.expand(x.shape[0], -1, -1), tokens], dim=1)
        out = self.mixer(tokens, size, num_prefix_tokens=self.num_prefix_tokens)
        spatial = tokens_to_map(out[:, self.num_prefix_tokens:], size)
        if self.num_prefix_tokens:
            # the prefix output is folded in so that its path is compared too
            spatial = spatial + out[:, :self.num_prefix_tokens].mean(1)[..., None, None]
        return spatial


class WrongSize(MixerOnMap):
    """Hands the mixer a size one column too wide: the check must survive tracing and fire at run time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixer(map_to_tokens(x), (x.shape[2], x.shape[3] + 1))


def _inputs():
    return [torch.randn(2, DIM, *size) for size in SIZES]


def _build(name, kwargs, prefix):
    return MixerOnMap(name, kwargs, prefix).eval()


@pytest.fixture(params=["auto", "naive"])
def backend(request):
    """Runs a test with the fast ops and again with the naive references."""
    previous = ops.get_backend()
    ops.set_backend(request.param)
    yield request.param
    ops.set_backend(previous)


@pytest.mark.parametrize("name, kwargs, prefix", CASES)
def test_mixer_symbolic_trace_follows_the_input_size(name, kwargs, prefix, backend):
    model = _build(name, kwargs, prefix)
    graph_module = torch.fx.symbolic_trace(model)
    for x in _inputs():
        torch.testing.assert_close(graph_module(x), model(x))


@pytest.mark.parametrize("name, kwargs, prefix", CASES)
def test_mixer_feature_extraction(name, kwargs, prefix):
    model = _build(name, kwargs, prefix)
    last = get_graph_node_names(model)[1][-1]
    torchvision_fx = create_feature_extractor(model, return_nodes={last: "out"})
    timm_fx = timm_feature_extractor(model, return_nodes={last: "out"})
    for x in _inputs():
        expected = model(x)
        torch.testing.assert_close(torchvision_fx(x)["out"], expected)
        torch.testing.assert_close(timm_fx(x)["out"], expected)


@pytest.mark.parametrize("name, kwargs, prefix", CASES)
def test_mixer_export_and_compile(name, kwargs, prefix):
    assert_exports_and_compiles(_build(name, kwargs, prefix), _inputs()[0])


@pytest.mark.parametrize("name", vitzoo.list_mixers())
def test_wrong_token_count_still_raises(name):
    model = WrongSize(name, MIXER_KWARGS.get(name, {}), 0).eval()
    x = torch.randn(1, DIM, 5, 7)
    with pytest.raises(ValueError, match="35 tokens for 0 prefix \\+ a 5x8 map"):
        model(x)
    with pytest.raises(ValueError, match="35 tokens for 0 prefix \\+ a 5x8 map"):
        torch.fx.symbolic_trace(model)(x)
    # the feature extractor drops unused nodes, but not the checks
    extractor = create_feature_extractor(model, return_nodes={get_graph_node_names(model)[1][-1]: "out"})
    with pytest.raises(ValueError, match="35 tokens for 0 prefix \\+ a 5x8 map"):
        extractor(x)
    with pytest.raises(ValueError, match="37 tokens for 1 prefix \\+ a 5x7 map"):
        model.mixer(torch.randn(1, 37, DIM), (5, 7), num_prefix_tokens=1)


class LayerOnMap(nn.Module):
    """A size-taking layer on the tokens of a map whose size is read inside forward."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[2], x.shape[3])
        return tokens_to_map(self.layer(map_to_tokens(x), size), size)


class WrongLayerSize(LayerOnMap):
    """Hands the layer a size one column too wide."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(map_to_tokens(x), (x.shape[2], x.shape[3] + 1))


class DepthwiseTokens(nn.Module):
    """``DepthwiseConv2d.tokens``, the token-layout entry of the LePE/DWC convolutions."""

    def __init__(self):
        super().__init__()
        self.conv = DepthwiseConv2d(DIM, 3)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.conv.tokens(x, size)


class RopeOnMap(nn.Module):
    """2-D RoPE on a map's tokens; its sin/cos tables are built from the traced size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[2], x.shape[3])
        return tokens_to_map(ops.rope_2d(map_to_tokens(x), size), size)


class Helpers(nn.Module):
    """The model-level shape helpers: input check, pad-if-needed, position-embedding resize-if-needed."""

    def __init__(self):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + 8 * 12, DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, DIM, min_size=2, model="helpers")
        # 7x9 is padded to 8x10 and the embedding resized; 8x12 takes neither step
        x = pad_to_multiple(x, 2)
        size = (x.shape[2], x.shape[3])
        pos_embed = resize_pos_embed(self.pos_embed, (8, 12), size, num_prefix_tokens=1)
        return x + tokens_to_map(pos_embed[:, 1:], size) + pos_embed[:, :1].mean()


LAYERS = [
    pytest.param(lambda: LayerOnMap(ConvPosEnc(DIM)), id="cpe"),
    pytest.param(lambda: LayerOnMap(LocalConcentration(DIM)), id="lcm"),
    pytest.param(lambda: LayerOnMap(DepthwiseTokens()), id="depthwise-tokens"),
    pytest.param(RopeOnMap, id="rope_2d"),
    pytest.param(Helpers, id="shape-helpers"),
]


@pytest.mark.parametrize("make", LAYERS)
def test_layers_trace_export_and_compile(make):
    model = make().eval()
    graph_module = torch.fx.symbolic_trace(model)
    last = get_graph_node_names(model)[1][-1]
    extractor = create_feature_extractor(model, return_nodes={last: "out"})
    for x in _inputs():
        expected = model(x)
        torch.testing.assert_close(graph_module(x), expected)
        torch.testing.assert_close(extractor(x)["out"], expected)
    x = _inputs()[0]
    torch.testing.assert_close(torch.export.export(model, (x,)).module()(x), model(x))
    torch._dynamo.reset()
    torch.testing.assert_close(torch.compile(model, fullgraph=True, backend="eager")(x), model(x))


def test_shape_helpers_keep_their_eager_errors_and_results():
    x = torch.randn(1, 3, 8, 12)
    assert pad_to_multiple(x, 4) is x
    assert pad_to_multiple(torch.randn(1, 3, 7, 9), 4).shape[-2:] == (8, 12)
    assert pad_to_multiple(torch.randn(1, 7, 9, 3), (2, 4), channels_last=True).shape[1:3] == (8, 12)
    pos_embed = torch.randn(1, 63, 8)
    assert resize_pos_embed(pos_embed, (7, 9), (7, 9)) is pos_embed
    assert resize_pos_embed(pos_embed, (7, 9), (4, 5)).shape == (1, 20, 8)
    pvt_style = resize_pos_embed(pos_embed, (7, 9), (4, 5), mode="bilinear", antialias=False, align_corners=False)
    image = pos_embed.transpose(1, 2).reshape(1, 8, 7, 9)
    expected = torch.nn.functional.interpolate(image, size=(4, 5), mode="bilinear", align_corners=False)
    torch.testing.assert_close(pvt_style, expected.flatten(2).transpose(1, 2), rtol=0, atol=0)
    assert check_image_input(x, 3, multiple_of=4) == (8, 12)
    with pytest.raises(ValueError, match="expects images"):
        check_image_input(x[0], 3)
    with pytest.raises(ValueError, match="expects 4 input channels"):
        check_image_input(x, 4)
    with pytest.raises(ValueError, match="at least 16x16"):
        check_image_input(x, 3, min_size=16)
    with pytest.raises(ValueError, match="divisible by 5"):
        check_image_input(x, 3, multiple_of=5)
    # the checks are graph nodes of a traced module, not trace-time assertions
    graph_module = torch.fx.symbolic_trace(WrongLayerSize(ConvPosEnc(DIM)))
    with pytest.raises(ValueError, match="expected spatial tokens \\[B, 5\\*8, C\\]"):
        graph_module(torch.randn(1, DIM, 5, 7))
    with pytest.raises(ValueError, match=f"expects {DIM} input channels, got 3"):
        torch.fx.symbolic_trace(Helpers())(torch.randn(1, 3, 8, 12))
