"""LinFusion: the mixer against the official goldens, the processor-mounted UNet against the official
patched UNet, checkpoint layouts (official hub, single file, UNet paths, fp16), SD-1.5 / 2.1 / XL
module lists, mount/unmount, and ControlNet / IP-Adapter pipelines."""

from __future__ import annotations

import json

import PIL.Image
import pytest
import torch
from conftest import golden_case, golden_folder

import vitzoo
from vitzoo.diffusion.linfusion import (
    LinFusion,
    LinFusionAttnProcessor,
    self_attention_modules,
    stable_diffusion_unet,
)
from vitzoo.mixers.linfusion import LinFusionMixer

TOL = dict(atol=1e-4, rtol=1e-4)
MIXER_TOL = dict(atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- the mixer


@pytest.mark.parametrize("case, mid_dim", [("mixer", None), ("mixer_mid8", 8)])
def test_mixer_matches_official_outputs(case, mid_dim):
    golden = golden_case("linfusion", case)
    mixer = vitzoo.create_mixer("linfusion", dim=32, num_heads=2, mid_dim=mid_dim).eval()
    mixer.load_state_dict(golden.weights)
    for name in ("grid6x10", "grid8x8"):
        spec = golden.meta["cases"][name]
        out = mixer(golden.io[f"{name}.x"], (spec["H"], spec["W"]))
        torch.testing.assert_close(out, golden.io[f"{name}.y"], **MIXER_TOL)
    # the official 1/N_query scaling of K^T V in cross-attention (a quirk the golden pins)
    out = mixer.attend(golden.io["cross.x"], golden.io["cross.ctx"])
    torch.testing.assert_close(out, golden.io["cross.y"], **MIXER_TOL)


def test_mixer_intermediates_match_official():
    golden = golden_case("linfusion", "mixer")
    mixer = vitzoo.create_mixer("linfusion", dim=32, num_heads=2).eval()
    mixer.load_state_dict(golden.weights)
    x, io = golden.io["grid6x10.x"], golden.io
    torch.testing.assert_close(x + mixer.to_q_(x), io["grid6x10.inter.q_in"], **MIXER_TOL)
    q_feat = mixer.feature_map(mixer._heads(mixer.to_q(io["grid6x10.inter.q_in"]))).flatten(0, 1)
    torch.testing.assert_close(q_feat, io["grid6x10.inter.q_feat"], **MIXER_TOL)
    captured = {}
    handle = mixer.to_out.register_forward_pre_hook(lambda module, args: captured.setdefault("merged", args[0]))
    mixer(x, (6, 10))
    handle.remove()
    torch.testing.assert_close(captured["merged"], io["grid6x10.inter.attn_merged"], **MIXER_TOL)


@pytest.mark.parametrize("case, mid_dim", [("mixer", None), ("mixer_mid8", 8)])
def test_seeded_construction_draws_the_official_initial_weights(case, mid_dim):
    golden = golden_case("linfusion", case)
    torch.manual_seed(0)
    mixer = LinFusionMixer(32, 2, mid_dim=mid_dim)
    for key, value in golden.weights.items():
        torch.testing.assert_close(mixer.state_dict()[key], value, atol=0, rtol=0)


def test_mixer_equals_explicit_normalised_attention():
    """o_i = Σ_j (φ(q_i)·φ(k_j)) v_j / (Σ_j φ(q_i)·φ(k_j) + eps·N), written out with the N x N matrix."""
    mixer = LinFusionMixer(12, 3).eval()
    x = torch.randn(2, 35, 12)
    phi = lambda t: torch.nn.functional.elu(t) + 1  # noqa: E731
    q = phi(mixer.to_q(x + mixer.to_q_(x))).view(2, 35, 3, 4).transpose(1, 2)
    k = phi(mixer.to_k(x + mixer.to_k_(x))).view(2, 35, 3, 4).transpose(1, 2)
    v = mixer.to_v(x).view(2, 35, 3, 4).transpose(1, 2)
    scores = q @ k.transpose(-2, -1)
    out = (scores @ v) / (scores.sum(-1, keepdim=True) + 1e-4 * 35)
    expected = mixer.to_out(out.transpose(1, 2).reshape(2, 35, 12))
    torch.testing.assert_close(mixer(x, (5, 7)), expected, atol=1e-5, rtol=1e-4)


def test_mixer_prefix_tokens_are_ordinary_tokens():
    mixer = LinFusionMixer(16, 2).eval()
    x = torch.randn(1, 1 + 12, 16)
    torch.testing.assert_close(mixer(x, (3, 4), num_prefix_tokens=1), mixer(x, (1, 13)))


def test_mixer_no_mlp_variant_doubles_the_input():
    """projection_mid_dim = -1: the official code feeds x + x to the projections."""
    mixer = LinFusionMixer(8, 2, mid_dim=-1)
    assert not any(k.startswith(("to_q_", "to_k_")) for k in mixer.state_dict())
    x = torch.randn(1, 6, 8)
    reference = LinFusionMixer(8, 2, mid_dim=4)
    reference.load_state_dict(mixer.state_dict(), strict=False)
    for branch in (reference.to_q_, reference.to_k_):
        branch[3].weight.data.zero_()
        branch[3].bias.data.zero_()
    with torch.no_grad():
        reference.to_q.weight.mul_(2)
        reference.to_k.weight.mul_(2)
    torch.testing.assert_close(mixer(x, (2, 3)), reference(x, (2, 3)))


def test_mixer_in_vzvit():
    model = vitzoo.create_model("vzvit_tiny", mixer="linfusion", img_size=32, patch_size=8, depth=2, num_classes=5)
    assert model(torch.randn(2, 3, 32, 48)).shape == (2, 5)


def test_mixer_key_weights_drop_keys():
    mixer = LinFusionMixer(8, 2).eval()
    x = torch.randn(1, 10, 8)
    changed = x.clone()
    changed[0, 6:] += 5.0  # only keys/values the mask drops
    keep = torch.ones(1, 10)
    keep[0, 6:] = 0
    torch.testing.assert_close(mixer.attend(x, changed, key_weights=keep), mixer.attend(x, x, key_weights=keep))
    assert not torch.allclose(mixer.attend(x, changed), mixer.attend(x, x))
    with pytest.raises(ValueError, match="key_weights must be"):
        mixer.attend(x, key_weights=torch.ones(1, 9))


# ---------------------------------------------------------------- the patched tiny UNet


@pytest.fixture(scope="module")
def golden_unet():
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    golden_case("linfusion", "mixer")  # skip (or fail on CI) when the golden data is absent
    root = golden_folder("linfusion")
    meta = json.loads((root / "unet_tiny.json").read_text())
    unet = UNet2DConditionModel(**meta["unet_config"]).eval()
    unet.load_state_dict(load_file(str(root / "unet_tiny.base.safetensors")))
    return unet, load_file(str(root / "unet_tiny.io.safetensors")), root, meta


def _run(unet, io):
    with torch.no_grad():
        return unet(io["sample"], io["timestep"], io["encoder_hidden_states"]).sample


def test_patched_unet_matches_official(golden_unet):
    unet, io, root, meta = golden_unet
    torch.testing.assert_close(_run(unet, io), io["out_base"], **TOL)
    linfusion = LinFusion.construct_for(unet, pretrained=root / "unet_tiny.linfusion.safetensors")
    try:
        assert linfusion.config.modules_list == meta["linfusion_modules"]
        outputs = {}
        hooks = [attn.register_forward_hook(lambda m, a, k, o, i=i: outputs.__setitem__(i, o), with_kwargs=True)
                 for i, (_, attn) in enumerate(linfusion.attention_modules())]
        torch.testing.assert_close(_run(unet, io), io["out_linfusion"], **TOL)
        for hook in hooks:
            hook.remove()
        for i in range(len(meta["linfusion_modules"])):
            torch.testing.assert_close(outputs[i], io[f"attn1.{i}.out"], **TOL)
    finally:
        linfusion.unmount()
    torch.testing.assert_close(_run(unet, io), io["out_base"], **TOL)


def test_official_directory_layout_loads_without_missing_or_unexpected_keys(golden_unet, tmp_path):
    from safetensors.torch import load_file, save_file

    unet, io, root, meta = golden_unet
    keys = json.loads((root / "unet_linfusion.keys.json").read_text())
    official = load_file(str(root / "unet_tiny.linfusion.safetensors"))
    assert {k: list(v.shape) for k, v in official.items()} == keys["tiny_checkpoint_keys"]
    # the hub stores fp16: written like that, loaded, upcast
    save_file({k: v.half() for k, v in official.items()}, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(keys["tiny_linfusion_config_json"]))
    linfusion = LinFusion.from_checkpoint(tmp_path)
    state = linfusion.state_dict()
    assert set(state) == set(official) and all(v.dtype == torch.float32 for v in state.values())
    for key, value in official.items():
        torch.testing.assert_close(state[key], value.half().float(), atol=0, rtol=0)
    # diffusers' own loader reads the same directory
    via_diffusers = LinFusion.from_pretrained(tmp_path)
    assert via_diffusers.config.modules_list == linfusion.config.modules_list


def test_unet_path_keys_map_onto_the_official_layout(golden_unet):
    unet, io, root, meta = golden_unet
    from safetensors.torch import load_file

    keys = json.loads((root / "unet_linfusion.keys.json").read_text())
    official = load_file(str(root / "unet_tiny.linfusion.safetensors"))
    by_path = {keys["tiny_checkpoint_key_to_unet_key"][k]: v for k, v in official.items()}
    for state in (by_path, {k.replace(".attn1.", ".attn1.processor.mixer."): v for k, v in by_path.items()}):
        linfusion = LinFusion.from_checkpoint(state, unet=unet)
        assert linfusion.config.modules_list == meta["linfusion_modules"]
        for key, value in official.items():
            torch.testing.assert_close(linfusion.state_dict()[key], value, atol=0, rtol=0)


def test_torch_pickles_load_bare_or_under_state_dict(golden_unet, tmp_path):
    unet, io, root, meta = golden_unet
    from safetensors.torch import load_file

    official = load_file(str(root / "unet_tiny.linfusion.safetensors"))
    torch.save(official, tmp_path / "bare.pt")
    torch.save({"state_dict": official, "step": 3}, tmp_path / "wrapped.bin")
    for name in ("bare.pt", "wrapped.bin"):
        linfusion = LinFusion.from_checkpoint(tmp_path / name, unet=unet)
        assert linfusion.config.modules_list == meta["linfusion_modules"]
        for key, value in official.items():
            torch.testing.assert_close(linfusion.state_dict()[key], value.float(), atol=0, rtol=0)


def test_save_pretrained_round_trips_in_the_official_layout(golden_unet, tmp_path):
    from safetensors.torch import load_file

    unet, io, root, meta = golden_unet
    linfusion = LinFusion.construct_for(unet, pretrained=root / "unet_tiny.linfusion.safetensors", mount=False)
    linfusion.save_pretrained(tmp_path / "lf")
    saved = load_file(str(tmp_path / "lf" / "diffusion_pytorch_model.safetensors"))
    official = load_file(str(root / "unet_tiny.linfusion.safetensors"))
    assert set(saved) == set(official)
    config = json.loads((tmp_path / "lf" / "config.json").read_text())
    assert config["_class_name"] == "LinFusion" and config["modules_list"] == meta["linfusion_modules"]
    linfusion.save_file(tmp_path / "single.safetensors")
    again = LinFusion.from_checkpoint(tmp_path / "single.safetensors")  # modules_list read from the metadata
    assert again.config.modules_list == meta["linfusion_modules"]


def test_seeded_fresh_construction_reproduces_the_official_fresh_checkpoint(golden_unet):
    from safetensors.torch import load_file

    unet, io, root, meta = golden_unet
    torch.manual_seed(0)
    linfusion = LinFusion.construct_for(unet, pretrained=False, mount=False)
    for key, value in load_file(str(root / "unet_tiny.linfusion.safetensors")).items():
        torch.testing.assert_close(linfusion.state_dict()[key], value, atol=0, rtol=0)


# ---------------------------------------------------------------- SD-1.5 / SD-2.1 / SD-XL layouts


HUB = {"sd15": "Yuanshi/LinFusion-1-5", "sd21": "Yuanshi/LinFusion-2-1", "sdxl": "Yuanshi/LinFusion-XL"}


@pytest.fixture(scope="module")
def hub_manifests():
    golden_case("linfusion", "mixer")
    return json.loads((golden_folder("linfusion") / "unet_linfusion.keys.json").read_text())["hub_checkpoints"]


@pytest.mark.parametrize("arch", ["sd15", "sd21", "sdxl"])
def test_official_checkpoint_layouts_fit_their_unets(arch, hub_manifests):
    manifest = hub_manifests[HUB[arch]]
    with torch.device("meta"):
        unet = stable_diffusion_unet(arch)
        linfusion = LinFusion(modules_list=manifest["modules_list"])
    strip = lambda spec: (spec["module_name"], spec["dim_n"], spec["heads"])  # noqa: E731
    assert [strip(s) for s in LinFusion.default_modules_list(unet)] == [strip(s) for s in manifest["modules_list"]]
    state = linfusion.state_dict()
    assert len(state) == manifest["num_tensors"]
    assert sum(p.numel() for p in linfusion.parameters()) == manifest["num_params"]
    assert {k: list(v.shape) for k, v in state.items() if k.startswith("0.")} == manifest["keys_of_module_0"]
    linfusion.mount_to(unet)
    installed = [name for name, p in unet.attn_processors.items() if isinstance(p, LinFusionAttnProcessor)]
    assert installed == [spec["module_name"] + ".processor" for spec in manifest["modules_list"]]
    assert all(name.endswith("attn1.processor") for name in installed)


@pytest.mark.parametrize("checkpoint, unet_arch, message", [
    ("sd15", "sdxl", "down_blocks.0.attentions.0.transformer_blocks.0.attn1 is not in this UNet"),
    ("sdxl", "sd15", "down_blocks.1.attentions.0.transformer_blocks.1.attn1 is not in this UNet"),
    ("sd21", "sd15", "has 320 channels and 8 heads, the checkpoint 320 and 5"),
])
def test_checkpoint_of_another_unet_is_refused_naming_modules(checkpoint, unet_arch, message, hub_manifests):
    with torch.device("meta"):
        unet = stable_diffusion_unet(unet_arch)
        linfusion = LinFusion(modules_list=hub_manifests[HUB[checkpoint]]["modules_list"])
    before = dict(unet.attn_processors)
    with pytest.raises(ValueError, match="made for another UNet") as err:
        linfusion.mount_to(unet)
    assert message in str(err.value)
    assert unet.attn_processors == before


def test_bare_state_dict_of_another_unet_is_refused(golden_unet):
    unet, io, root, meta = golden_unet
    state = {f"{i}.to_q.weight": torch.zeros(32, 32) for i in range(12)}
    with pytest.raises(ValueError, match="holds 12 LinFusion modules .* has 11 self-attention modules"):
        LinFusion.from_checkpoint(state, unet=unet)
    with pytest.raises(ValueError, match="missing: 0.to_k.weight \\(down_blocks.0"):
        LinFusion.from_checkpoint({f"{i}.to_q.weight": torch.zeros(32, 32) for i in range(11)}, unet=unet)


def test_unknown_base_model_needs_an_explicit_checkpoint(golden_unet):
    unet, *_ = golden_unet
    with pytest.raises(ValueError, match="no known LinFusion checkpoint .* pretrained=False"):
        LinFusion.construct_for(unet)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LinFusion.construct_for(unet, pretrained="/no/such/linfusion.safetensors")


# ---------------------------------------------------------------- mounting behaviour


def test_mount_touches_only_self_attention_and_unmount_restores_the_same_processors(golden_unet):
    unet, io, root, meta = golden_unet
    before = dict(unet.attn_processors)
    linfusion = LinFusion.construct_for(unet, pretrained=False)
    after = unet.attn_processors
    for name, processor in after.items():
        if name.endswith("attn2.processor"):
            assert processor is before[name]
        else:
            assert isinstance(processor, LinFusionAttnProcessor)
    assert len(linfusion.config.modules_list) == len(self_attention_modules(unet)) == 11
    with pytest.raises(ValueError, match="already runs LinFusion"):
        LinFusion.construct_for(unet, pretrained=False)
    with linfusion.original_attention():
        assert all(unet.attn_processors[k] is v for k, v in before.items())
        torch.testing.assert_close(_run(unet, io), io["out_base"], **TOL)
    assert isinstance(unet.attn_processors[meta["linfusion_modules"][0]["module_name"] + ".processor"],
                      LinFusionAttnProcessor)
    linfusion.unmount()
    assert all(unet.attn_processors[k] is v for k, v in before.items())
    assert set(unet.state_dict()) == {k for k in unet.state_dict() if "processor" not in k}
    with pytest.raises(RuntimeError, match="not mounted"):
        linfusion.unmount()


def test_mounted_weights_follow_the_unet_and_live_in_the_container(golden_unet):
    unet, *_ = golden_unet
    linfusion = LinFusion.construct_for(unet, pretrained=False, dtype=torch.float64)
    try:
        assert all(p.dtype == torch.float64 for p in linfusion.parameters())
        assert not any(isinstance(m, type(unet)) for m in linfusion.modules())  # the UNet is not a child
        assert len(linfusion.state_dict()) == 17 * 11
    finally:
        linfusion.unmount()


def test_processor_honours_diffusers_attention_options():
    """A 4-D input, group norm, residual connection and output rescale, as AttnProcessor2_0 applies them."""
    from diffusers.models.attention_processor import Attention

    attn = Attention(query_dim=8, heads=2, dim_head=4, norm_num_groups=2, residual_connection=True,
                     rescale_output_factor=2.0)
    mixer = LinFusionMixer(8, 2)
    attn.set_processor(LinFusionAttnProcessor(mixer))
    x = torch.randn(2, 8, 3, 5)
    tokens = attn.group_norm(x.flatten(2)).transpose(1, 2)
    expected = (mixer.attend(tokens).transpose(1, 2).reshape(2, 8, 3, 5) + x) / 2.0
    torch.testing.assert_close(attn(x), expected)


def test_processor_applies_key_masks_and_refuses_query_masks():
    from diffusers.models.attention_processor import Attention

    attn = Attention(query_dim=8, heads=2, dim_head=4)
    mixer = LinFusionMixer(8, 2)
    attn.set_processor(LinFusionAttnProcessor(mixer))
    x = torch.randn(2, 6, 8)
    keep = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    bias = (1 - keep.float()) * -10000.0  # the form Transformer2DModel hands down
    expected = mixer.attend(x, key_weights=keep.float())
    torch.testing.assert_close(attn(x, attention_mask=keep), expected)
    torch.testing.assert_close(attn(x, attention_mask=bias[:, None]), expected)
    with pytest.raises(ValueError, match="key masks"):
        attn(x, attention_mask=torch.zeros(2, 6, 6))


def test_processor_cannot_be_recreated_empty():
    with pytest.raises(TypeError, match="unmount"):
        LinFusionAttnProcessor()


def test_processor_rejects_a_layer_of_other_width():
    from diffusers.models.attention_processor import Attention

    attn = Attention(query_dim=16, heads=2, dim_head=8)
    attn.set_processor(LinFusionAttnProcessor(LinFusionMixer(8, 2)))
    with pytest.raises(ValueError, match="built for 8 channels"):
        attn(torch.randn(1, 4, 16))


# ---------------------------------------------------------------- pipelines: SD-XL, ControlNet, IP-Adapter


def test_sdxl_style_unet_runs_with_linfusion():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2), attention_head_dim=(2, 4), cross_attention_dim=24,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=24 + 6 * 8).eval()
    linfusion = LinFusion.construct_for(unet, pretrained=False, projection_mid_dim=2)
    assert [s["module_name"] for s in linfusion.config.modules_list][:2] == [
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1",
        "down_blocks.1.attentions.0.transformer_blocks.1.attn1"]
    assert linfusion.state_dict()["0.to_q_.0.weight"].shape == (2, 32)
    inputs = dict(sample=torch.randn(1, 4, 8, 12), timestep=torch.tensor([10]),
                  encoder_hidden_states=torch.randn(1, 5, 24),
                  added_cond_kwargs=dict(text_embeds=torch.randn(1, 24), time_ids=torch.randn(1, 6)))
    with torch.no_grad():
        patched = unet(**inputs).sample
        with linfusion.original_attention():
            original = unet(**inputs).sample
    assert patched.shape == original.shape and torch.isfinite(patched).all()
    assert not torch.allclose(patched, original)


@pytest.fixture()
def tiny_pipe(tmp_path):
    from vitzoo.testing.tiny_diffusion import tiny_stable_diffusion

    return tiny_stable_diffusion(directory=tmp_path / "tokenizer", vae_config=dict(sample_size=64))


def _count_mixer_calls(linfusion):
    calls = []
    handles = [m.to_out.register_forward_hook(lambda *a: calls.append(1)) for m in linfusion.children()]
    return calls, handles


def test_controlnet_pipeline_keeps_its_controlnet_attention(tiny_pipe):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    controlnet = ControlNetModel.from_unet(tiny_pipe.unet, conditioning_embedding_out_channels=(8, 8, 8, 16)).eval()
    pipe = StableDiffusionControlNetPipeline(**{k: v for k, v in tiny_pipe.components.items() if k != "image_encoder"},
                                             controlnet=controlnet, image_encoder=None)
    pipe.set_progress_bar_config(disable=True)
    control_before = dict(controlnet.attn_processors)
    kwargs = dict(prompt="a cat", image=torch.rand(1, 3, 64, 64), height=64, width=64, num_inference_steps=2,
                  output_type="pt")
    original = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
    linfusion = LinFusion.construct_for(pipe, pretrained=False)
    calls, handles = _count_mixer_calls(linfusion)
    patched = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
    assert len(calls) == 2 * len(linfusion.config.modules_list)  # two steps, guidance batch in one call
    assert all(controlnet.attn_processors[k] is v for k, v in control_before.items())
    assert not torch.allclose(patched, original)
    for handle in handles:
        handle.remove()
    linfusion.unmount()
    torch.testing.assert_close(pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images, original)


def test_ip_adapter_pipeline_keeps_its_cross_attention_processors(tiny_pipe):
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    pipe = tiny_pipe
    pipe.image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=16, intermediate_size=20, num_attention_heads=2, num_hidden_layers=1, image_size=32,
        patch_size=8, projection_dim=12)).eval()
    pipe.feature_extractor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    cross = pipe.unet.config.cross_attention_dim
    widths = {"down_blocks.0": 16, "up_blocks.1": 16, "mid_block": 32}
    attn2 = [n for n in pipe.unet.attn_processors if n.endswith("attn2.processor")]
    ip_layers = {}
    for key_id, name in zip(range(1, 2 * len(attn2), 2), attn2):
        width = next(w for prefix, w in widths.items() if name.startswith(prefix))
        ip_layers[f"{key_id}.to_k_ip.weight"] = torch.randn(width, cross) * 0.1
        ip_layers[f"{key_id}.to_v_ip.weight"] = torch.randn(width, cross) * 0.1
    adapter = {"image_proj": {"proj.weight": torch.randn(4 * cross, 12) * 0.1, "proj.bias": torch.zeros(4 * cross),
                              "norm.weight": torch.ones(cross), "norm.bias": torch.zeros(cross)},
               "ip_adapter": ip_layers}
    pipe.load_ip_adapter(adapter, subfolder="", weight_name="unused.safetensors", image_encoder_folder=None)
    linfusion = LinFusion.construct_for(pipe, pretrained=False)
    processors = pipe.unet.attn_processors
    assert all(isinstance(processors[n], IPAdapterAttnProcessor2_0) for n in attn2)
    assert all(isinstance(p, LinFusionAttnProcessor) for n, p in processors.items() if n.endswith("attn1.processor"))
    calls, handles = _count_mixer_calls(linfusion)
    reference = PIL.Image.fromarray(torch.randint(0, 256, (40, 40, 3), dtype=torch.uint8).numpy())
    image = pipe("a cat", ip_adapter_image=reference, height=64, width=64, num_inference_steps=2,
                 output_type="pt").images
    assert image.shape == (1, 3, 64, 64) and len(calls) == 2 * len(linfusion.config.modules_list)
    for handle in handles:
        handle.remove()
    # diffusers re-creates every processor by class when it (un)loads IP-Adapters: a clear error, not silent loss
    with pytest.raises(TypeError, match="unmount"):
        pipe.unload_ip_adapter()
    linfusion.unmount()
    pipe.unload_ip_adapter()
    assert not any(isinstance(p, (IPAdapterAttnProcessor2_0, LinFusionAttnProcessor))
                   for p in pipe.unet.attn_processors.values())
