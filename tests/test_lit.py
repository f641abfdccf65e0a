"""LiT: the mixer, the diffusers model and its DiT twin, weight inheritance and the distillation loss,
against the golden data of ``../shared/golden/lit/`` (official DiT + the reconstructed LiT attention)."""

from __future__ import annotations

import inspect
import json
import re

import pytest
import torch

import vitzoo
from conftest import golden_case, golden_folder, golden_manifest, write_official_checkpoint
from vitzoo.diffusion.dit import TimestepEmbedder, VzDiTTransformer2DModel, sincos_pos_embed_2d
from vitzoo.diffusion.distill import LiTDistillationLoss
from vitzoo.diffusion.gaussian_diffusion import GaussianDiffusion, discretized_gaussian_log_likelihood
from vitzoo.diffusion.inherit import (
    dit_state_dict_from_diffusers,
    inherit_from_dit,
    load_dit_state_dict,
    plan_inheritance,
)
from vitzoo.diffusion.lit import LiTTransformer2DModel
from vitzoo.diffusion.pipelines import classifier_free_guidance, ddpm_scheduler
from vitzoo.models._checkpoint import CheckpointError

TOL = dict(atol=1e-4, rtol=1e-4)
VARIANTS = {"s_2": "S/2", "b_2": "B/2", "l_2": "L/2", "xl_2": "XL/2"}


def _tiny_kwargs(case) -> dict:
    kwargs = dict(case.meta["kwargs"])
    kwargs["sample_size"] = kwargs.pop("input_size")
    return kwargs


def _golden_model(name: str, cls):
    case = golden_case("lit", name)
    model = cls(**_tiny_kwargs(case)).eval()
    model.load_state_dict(case.weights)
    return case, model


# ---------------------------------------------------------------- mixer


@pytest.mark.parametrize("inputs,size,output", [
    pytest.param("in.x_square", (4, 4), "out.o_square_HW_none", id="square"),
    pytest.param("in.x_rect", (4, 6), "out.o_rect_HW_4x6", id="rect-4x6"),
])
def test_mixer_matches_golden(inputs, size, output):
    case = golden_case("lit", "mixer_lit_linear_attention")
    mixer = vitzoo.create_mixer("lit", 32, 2)
    mixer.load_state_dict(case.weights)
    torch.testing.assert_close(mixer(case.io[inputs], size), case.io[output], atol=1e-5, rtol=1e-5)


def test_mixer_intermediates_locate_the_parts():
    """v is the second half of kv; the DWC branch uses one kernel for every head."""
    case = golden_case("lit", "mixer_lit_linear_attention")
    mixer = vitzoo.create_mixer("lit", 32, 2)
    mixer.load_state_dict(case.weights)
    x = case.io["in.x_rect"]
    value = mixer.kv(x)[..., 32:]
    torch.testing.assert_close(value, case.io["out.rect.v"], atol=1e-5, rtol=1e-5)
    per_head = value.view(2, 24, 2, 16).permute(0, 2, 3, 1).reshape(4, 16, 4, 6)
    local = torch.nn.functional.conv2d(per_head, mixer.dwc.weight, mixer.dwc.bias, padding=2, groups=16)
    local = local.view(2, 2, 16, 24).permute(0, 3, 1, 2).reshape(2, 24, 32)
    torch.testing.assert_close(local, case.io["out.rect.dwc_branch"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixer.proj(case.io["out.rect.linear_attn"] + local), case.io["out.o_rect_HW_4x6"],
                               atol=1e-5, rtol=1e-5)


def test_mixer_prefix_tokens_attend_but_get_no_convolution():
    mixer = vitzoo.create_mixer("lit", 16, 2).eval()
    x = torch.randn(1, 1 + 12, 16)
    with_prefix = mixer(x, (3, 4), num_prefix_tokens=1)
    q = torch.relu(mixer.q(x)) + 1e-6
    k, v = mixer.kv(x).chunk(2, dim=-1)
    k = torch.relu(k) + 1e-6
    heads = lambda t: t.view(1, 13, 2, 8).transpose(1, 2)  # noqa: E731
    attn = vitzoo.ops.linear_attention_naive(heads(q), heads(k), heads(v))
    cls_token = mixer.proj(attn[:, :, :1].transpose(1, 2).reshape(1, 1, 16))
    torch.testing.assert_close(with_prefix[:, :1], cls_token, atol=1e-5, rtol=1e-5)


def test_mixer_works_inside_vzvit():
    model = vitzoo.create_model("vzvit_small", mixer="lit", embed_dim=32, depth=1, num_heads=2, img_size=32,
                                patch_size=8, num_classes=5)
    assert model(torch.randn(2, 3, 32, 40)).shape == (2, 5)


# ---------------------------------------------------------------- model


@pytest.mark.parametrize("name,cls", [
    pytest.param("lit_tiny", LiTTransformer2DModel, id="lit"),
    pytest.param("dit_tiny_teacher", VzDiTTransformer2DModel, id="dit"),
])
def test_model_matches_golden_with_intermediates(name, cls):
    case, model = _golden_model(name, cls)
    assert sum(p.numel() for p in model.parameters()) == case.meta["num_params"]
    io, captured = case.io, {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: captured.__setitem__(n, o))
             for n in ("x_embedder", "t_embedder", "y_embedder", "final_layer")]
    for index, block in enumerate(model.blocks):
        hooks.append(block.attn.register_forward_hook(
            lambda m, i, o, n=f"blocks.{index}.attn": captured.update({n: o, n + ".in": i[0]})))
        hooks.append(block.register_forward_hook(lambda m, i, o, n=f"blocks.{index}": captured.__setitem__(n, o)))
    with torch.no_grad():
        out = model(io["in.x"], io["in.t"], io["in.y"]).sample
    torch.testing.assert_close(out, io["out.out"], **TOL)
    captured["c"] = captured["t_embedder"] + captured["y_embedder"]
    for key, value in captured.items():
        torch.testing.assert_close(value, io[f"out.{key}"], **TOL, msg=lambda m, key=key: f"{key}: {m}")
    for hook in hooks:
        hook.remove()


def _guided(model, x, t, y, scale, guidance_channels="config"):
    """The official ``forward_with_cfg`` call as the pipeline makes it: the conditional half for both halves,
    one forward, then guidance; returns the conditional half."""
    half = x[: x.shape[0] // 2]
    raw = model(torch.cat([half, half]), t, y).sample
    channels = model.config.guidance_channels if guidance_channels == "config" else guidance_channels
    return classifier_free_guidance(raw, scale, eps_channels=model.config.in_channels, guidance_channels=channels)


@pytest.mark.parametrize("name,cls", [
    pytest.param("lit_tiny", LiTTransformer2DModel, id="lit"),
    pytest.param("dit_tiny_teacher", VzDiTTransformer2DModel, id="dit"),
])
def test_guidance_matches_official_three_channel_cfg(name, cls):
    """The official method writes the guided ε into both halves; the sampler keeps the conditional one."""
    case, model = _golden_model(name, cls)
    io = case.io
    with torch.no_grad():
        guided = _guided(model, io["in.cfg_x"], io["in.cfg_t"], io["in.cfg_y"], 1.5)
    torch.testing.assert_close(guided, io["out.cfg1p5_out"][: guided.shape[0]], **TOL)


def test_guidance_on_all_channels_is_offered():
    case, model = _golden_model("lit_tiny", LiTTransformer2DModel)
    io = case.io
    with torch.no_grad():
        raw = model(torch.cat([io["in.cfg_x"][:2]] * 2), io["in.cfg_t"], io["in.cfg_y"]).sample
        full = _guided(model, io["in.cfg_x"], io["in.cfg_t"], io["in.cfg_y"], 1.5, guidance_channels=None)
    cond, uncond = raw[:2, :4], raw[2:, :4]
    torch.testing.assert_close(full[:, :4], uncond + 1.5 * (cond - uncond), **TOL)
    torch.testing.assert_close(full[:, 4:], raw[:2, 4:])
    # the official variant leaves the fourth ε channel unguided
    official = _guided(model, io["in.cfg_x"], io["in.cfg_t"], io["in.cfg_y"], 1.5)
    torch.testing.assert_close(official[:, 3], raw[:2, 3])
    # a one-channel model guides its one ε channel and never the variance channel
    gray = LiTTransformer2DModel(in_channels=1, hidden_size=32, depth=1, num_heads=2, sample_size=4, num_classes=3)
    torch.nn.init.normal_(gray.final_layer.linear.weight)
    torch.nn.init.normal_(gray.final_layer.adaLN_modulation[1].weight)
    x, t, y = torch.randn(4, 1, 4, 4), torch.tensor([5] * 4), torch.tensor([0, 1, 3, 3])
    raw = gray(torch.cat([x[:2]] * 2), t, y).sample
    guided = _guided(gray, x, t, y, 2.0)
    torch.testing.assert_close(guided[:, :1], raw[2:, :1] + 2.0 * (raw[:2, :1] - raw[2:, :1]))
    torch.testing.assert_close(guided[:, 1:], raw[:2, 1:])
    with pytest.raises(ValueError, match="positive count"):
        LiTTransformer2DModel(guidance_channels=0, hidden_size=32, depth=1, num_heads=2, sample_size=4)
    with pytest.raises(ValueError, match="positive count"):
        classifier_free_guidance(raw, 2.0, eps_channels=1, guidance_channels=0)
    with pytest.raises(ValueError, match="even batch"):
        classifier_free_guidance(raw[:3], 2.0, eps_channels=1, guidance_channels=None)


def test_embeddings_follow_the_official_formulas():
    embedder, features = TimestepEmbedder(8), []
    embedder.mlp.register_forward_pre_hook(lambda m, args: features.append(args[0]))
    embedder(torch.tensor([3.0]))
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(128) / 128)
    torch.testing.assert_close(features[0], torch.cat([torch.cos(3 * freqs), torch.sin(3 * freqs)])[None])
    table = sincos_pos_embed_2d(8, (2, 3))[0]  # tokens row-major over (h=2, w=3)
    omega = 1.0 / 10000 ** (torch.arange(2) / 2)
    col, row = 2.0, 1.0  # token 5
    expected = torch.cat([torch.sin(col * omega), torch.cos(col * omega),
                          torch.sin(row * omega), torch.cos(row * omega)])
    torch.testing.assert_close(table[5], expected)


def test_other_latent_sizes_use_the_same_table_formula():
    """A LiT trained at 8x8 latents runs on 8x12; the 4x4 corner of the 4x6 table equals the stored 4x4 one
    only in its column half (rows beyond 4 do not exist there), so compare against the formula."""
    case, model = _golden_model("lit_tiny", LiTTransformer2DModel)
    table = model._position_table((4, 6), torch.float32)
    torch.testing.assert_close(table, sincos_pos_embed_2d(32, (4, 6)))
    torch.testing.assert_close(model._position_table((4, 4), torch.float32), case.weights["pos_embed"])
    out = model(torch.randn(2, 4, 8, 12), torch.tensor([5, 500]), torch.tensor([0, 3])).sample
    assert out.shape == (2, 8, 8, 12) and torch.isfinite(out).all()


def test_model_rejects_bad_inputs():
    model = LiTTransformer2DModel(sample_size=8, hidden_size=32, depth=1, num_heads=2, num_classes=3)
    with pytest.raises(ValueError, match=r"expected latents \[B, 4, H, W\]"):
        model(torch.randn(1, 3, 8, 8), 1, torch.tensor([0]))
    with pytest.raises(ValueError, match="not a multiple of patch_size 2"):
        model(torch.randn(1, 4, 7, 8), 1, torch.tensor([0]))
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 3\]"):
        model(torch.randn(1, 4, 8, 8), 1, torch.tensor([4]))


def test_null_labels_when_class_labels_are_omitted():
    model = LiTTransformer2DModel(sample_size=8, hidden_size=32, depth=1, num_heads=2, num_classes=3)
    torch.nn.init.normal_(model.final_layer.linear.weight)
    torch.nn.init.normal_(model.final_layer.adaLN_modulation[1].weight)
    x = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(model(x, 7).sample, model(x, torch.tensor([7, 7]), torch.tensor([3, 3])).sample)


def test_fresh_model_predicts_zeros_like_official_init():
    model = LiTTransformer2DModel(sample_size=8, hidden_size=32, depth=2, num_heads=2, num_classes=3)
    assert torch.count_nonzero(model(torch.randn(2, 4, 8, 8), 3, torch.tensor([0, 1])).sample) == 0


def test_gradient_checkpointing_keeps_outputs_and_grads():
    case, model = _golden_model("lit_tiny", LiTTransformer2DModel)
    io = case.io
    model.train()
    out = model(io["in.x"], io["in.t"], io["in.y"]).sample
    out.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.enable_gradient_checkpointing()
    used = []
    checkpointed = model._gradient_checkpointing_func
    model._gradient_checkpointing_func = lambda block, *args: used.append(1) or checkpointed(block, *args)
    out2 = model(io["in.x"], io["in.t"], io["in.y"]).sample
    out2.square().mean().backward()
    assert len(used) == 2
    torch.testing.assert_close(out2, out)
    for name, param in model.named_parameters():
        if name in grads:
            torch.testing.assert_close(param.grad, grads[name], msg=name)


def test_save_pretrained_round_trip(tmp_path):
    case, model = _golden_model("lit_tiny", LiTTransformer2DModel)
    model.save_pretrained(tmp_path)
    loaded = LiTTransformer2DModel.from_pretrained(tmp_path).eval()
    assert loaded.config.mixer == "lit" and loaded.config.num_heads == 2
    io = case.io
    torch.testing.assert_close(loaded(io["in.x"], io["in.t"], io["in.y"]).sample, io["out.out"], **TOL)
    overridden = LiTTransformer2DModel.from_pretrained(tmp_path, guidance_channels=None)
    assert overridden.config.guidance_channels is None


def test_lit_is_dit_with_its_own_defaults_recorded(tmp_path):
    lit = inspect.signature(LiTTransformer2DModel.__init__).parameters
    dit = inspect.signature(VzDiTTransformer2DModel.__init__).parameters
    assert list(lit) == list(dit)
    assert {name for name in lit if lit[name].default != dit[name].default} == {"num_heads", "mixer"}
    model = LiTTransformer2DModel(sample_size=4, hidden_size=32, depth=1, num_classes=3)
    assert type(model.blocks[0].attn).__name__ == "LiTMixer" and model.blocks[0].attn.num_heads == 4
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert set(lit) - {"self"} <= set(saved) and (saved["num_heads"], saved["mixer"]) == (4, "lit")


MANIFESTS = [("lit", v) for v in ("s_2", "b_2", "l_2", "xl_2", "xl_2_512")] + [("dit", v) for v in VARIANTS]


@pytest.mark.parametrize("family,variant", MANIFESTS, ids=[f"{f}_{v}" for f, v in MANIFESTS])
def test_full_size_keys_and_params_match_manifests(family, variant):
    cls = LiTTransformer2DModel if family == "lit" else VzDiTTransformer2DModel
    manifest = golden_manifest("lit", f"{family}_{variant}")
    with torch.device("meta"):
        model = cls.from_variant(VARIANTS[variant.removesuffix("_512")], 512 if variant.endswith("512") else 256)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(s) for k, s in manifest["keys"]}
    assert sum(p.numel() for p in model.parameters()) == manifest["num_params"]


# ---------------------------------------------------------------- inheritance


def _teacher_to_diffusers(teacher: dict, depth: int) -> dict:
    """Official DiT keys -> diffusers' DiTTransformer2DModel keys (the test's own mapping)."""
    out = {}
    for s in ("weight", "bias"):
        out[f"pos_embed.proj.{s}"] = teacher[f"x_embedder.proj.{s}"]
        out[f"proj_out_1.{s}"] = teacher[f"final_layer.adaLN_modulation.1.{s}"]
        out[f"proj_out_2.{s}"] = teacher[f"final_layer.linear.{s}"]
        for i in range(depth):
            b, d = f"blocks.{i}.", f"transformer_blocks.{i}."
            out[f"{d}norm1.emb.timestep_embedder.linear_1.{s}"] = teacher[f"t_embedder.mlp.0.{s}"]
            out[f"{d}norm1.emb.timestep_embedder.linear_2.{s}"] = teacher[f"t_embedder.mlp.2.{s}"]
            out[f"{d}norm1.linear.{s}"] = teacher[f"{b}adaLN_modulation.1.{s}"]
            q, k, v = teacher[f"{b}attn.qkv.{s}"].chunk(3)
            out[f"{d}attn1.to_q.{s}"], out[f"{d}attn1.to_k.{s}"], out[f"{d}attn1.to_v.{s}"] = q, k, v
            out[f"{d}attn1.to_out.0.{s}"] = teacher[f"{b}attn.proj.{s}"]
            out[f"{d}ff.net.0.proj.{s}"] = teacher[f"{b}mlp.fc1.{s}"]
            out[f"{d}ff.net.2.{s}"] = teacher[f"{b}mlp.fc2.{s}"]
    for i in range(depth):
        table = f"transformer_blocks.{i}.norm1.emb.class_embedder.embedding_table.weight"
        out[table] = teacher["y_embedder.embedding_table.weight"]
    return out


def _diffusers_teacher(teacher: dict):
    from diffusers import DiTTransformer2DModel

    model = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8,
                                  num_layers=2, sample_size=8, num_embeds_ada_norm=3, norm_num_groups=1)
    model.load_state_dict(_teacher_to_diffusers(teacher, 2))  # strict: diffusers itself checks the names
    return model


@pytest.mark.parametrize("form", ["official_pt", "training_checkpoint", "diffusers_folder", "diffusers_model"])
def test_inheritance_matches_golden(form, tmp_path):
    case = golden_case("lit", "lit_tiny_inherit")
    teacher = golden_case("lit", "dit_tiny_teacher").weights
    mapping = json.loads((golden_folder("lit") / "lit_inheritance_map.tiny.json").read_text())
    if form == "official_pt":
        source = tmp_path / "DiT-tiny.pt"
        torch.save(teacher, source)
    elif form == "training_checkpoint":
        source = tmp_path / "0001000.pt"
        decoy = {k: torch.zeros_like(v) for k, v in teacher.items()}
        write_official_checkpoint(source, {}, extra={"model": decoy, "ema": teacher, "opt": {}}, config_kind="argparse")
    elif form == "diffusers_folder":
        source = tmp_path / "dit"
        _diffusers_teacher(teacher).save_pretrained(source / "transformer")
    else:
        source = _diffusers_teacher(teacher)
    student = LiTTransformer2DModel(**_tiny_kwargs(case))
    report = inherit_from_dit(student, source)
    assert sorted(report.inherited) == mapping["inherited"]
    assert sorted(report.new) == mapping["new_randomly_initialised"]
    assert sorted(report.dropped) == mapping["teacher_keys_dropped"]
    # the new attention weights are the student's own init: take the golden student's to compare outputs
    student.load_state_dict({k: case.weights[k] for k in report.new}, strict=False)
    for key, value in student.state_dict().items():
        torch.testing.assert_close(value, case.weights[key], msg=key)
    io = case.io
    with torch.no_grad():
        torch.testing.assert_close(student.eval()(io["in.x"], io["in.t"], io["in.y"]).sample, io["out.student"], **TOL)
        dit = VzDiTTransformer2DModel(**_tiny_kwargs(case)).eval()
        dit.load_state_dict(load_dit_state_dict(source))
        torch.testing.assert_close(dit(io["in.x"], io["in.t"], io["in.y"]).sample, io["out.teacher"], **TOL)


def test_text2image_rule_also_inherits_the_output_projection():
    case = golden_case("lit", "lit_tiny_inherit")
    teacher = golden_case("lit", "dit_tiny_teacher").weights
    mapping = json.loads((golden_folder("lit") / "lit_inheritance_map.tiny.json").read_text())
    student = LiTTransformer2DModel(**_tiny_kwargs(case))
    report = inherit_from_dit(student, teacher, rule="text2image")
    assert sorted(report.inherited) == sorted(mapping["inherited"] + mapping["text2image_variant_also_inherits"])
    assert sorted(report.unexpected) == [k for k in mapping["teacher_keys_dropped"] if ".qkv." in k]
    torch.testing.assert_close(student.blocks[0].attn.proj.weight, teacher["blocks.0.attn.proj.weight"])


def test_inheritance_errors_name_the_problem():
    teacher = golden_case("lit", "dit_tiny_teacher").weights
    wide = LiTTransformer2DModel(sample_size=8, hidden_size=64, depth=2, num_heads=2, num_classes=3)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        inherit_from_dit(wide, teacher)
    deep = LiTTransformer2DModel(sample_size=8, hidden_size=32, depth=3, num_heads=2, num_classes=3)
    with pytest.raises(CheckpointError, match=r"lacks .* blocks\.2\.mlp"):
        inherit_from_dit(deep, teacher)
    with pytest.raises(ValueError, match="rule must be one of"):
        plan_inheritance({}, {}, rule="everything")
    diffusers_sd = _teacher_to_diffusers(teacher, 2)
    diffusers_sd["transformer_blocks.1.norm1.emb.timestep_embedder.linear_1.bias"] = torch.ones(32)
    with pytest.raises(CheckpointError, match="block 1's copy of timestep_embedder.linear_1.bias differs"):
        dit_state_dict_from_diffusers(diffusers_sd)


@pytest.mark.parametrize("variant", ["s_2", "b_2", "l_2", "xl_2"])
def test_full_size_inheritance_yields_the_spec_key_sets(variant):
    expected = json.loads((golden_folder("lit") / f"lit_{variant}.inheritance.json").read_text())
    student = {k: s for k, s in golden_manifest("lit", f"lit_{variant}")["keys"]}
    teacher = {k: s for k, s in golden_manifest("lit", f"dit_{variant}")["keys"]}
    report = plan_inheritance(student, teacher)
    assert report.inherited == expected["inherited"]
    assert (report.inherited_params, report.new_params) == (expected["inherited_params"], expected["new_params"])
    assert len(report.new) == expected["n_new_tensors"] and len(report.dropped) == expected["n_dropped_teacher_tensors"]
    assert {re.sub(r"blocks\.\d+\.", "blocks.{i}.", k) for k in report.new} == set(expected["new_key_patterns"])
    assert {re.sub(r"blocks\.\d+\.", "blocks.{i}.", k) for k in report.dropped} == set(expected["dropped_key_patterns"])
    # and the real model, built on meta, accepts exactly the inherited keys
    with torch.device("meta"):
        model = LiTTransformer2DModel.from_variant(VARIANTS[variant])
    assert set(report.inherited) | set(report.new) == set(model.state_dict())


# ---------------------------------------------------------------- distillation loss


def test_distillation_loss_matches_golden():
    case = golden_case("lit", "lit_kd_loss")
    _, student = _golden_model("lit_tiny_inherit", LiTTransformer2DModel)
    _, teacher = _golden_model("dit_tiny_teacher", VzDiTTransformer2DModel)
    io = case.io
    x0, t, y, noise = io["in.x0"], io["in.t"], io["in.y"], io["in.noise"]
    loss = LiTDistillationLoss(noise_weight=case.meta["kwargs"]["lambda_noise_c2i"],
                               variance_weight=case.meta["kwargs"]["lambda_var_c2i"])
    x_t = loss.diffusion.q_sample(x0, t, noise)
    torch.testing.assert_close(x_t, io["out.x_t"], **TOL)
    with torch.no_grad():
        s_out, t_out = student(x_t, t, y).sample, teacher(x_t, t, y).sample
    torch.testing.assert_close(s_out[:, :4], io["out.eps_student"], **TOL)
    torch.testing.assert_close(t_out[:, 4:], io["out.v_teacher"], **TOL)
    terms = loss(s_out, x0, x_t, t, noise, t_out)
    for ours, golden in [("mse", "mse"), ("vb", "vb"), ("noise_kd", "noise_kd"), ("variance_kd", "var_kd_raw"),
                         ("loss", "total_c2i")]:
        torch.testing.assert_close(terms[ours], io[f"out.{golden}"], **TOL, msg=ours)
    torch.testing.assert_close(terms["mse"] + terms["vb"], io["out.loss_official"], **TOL)
    t2i = LiTDistillationLoss(noise_weight=1.0, variance_weight=0.05)(s_out, x0, x_t, t, noise, t_out)
    torch.testing.assert_close(t2i["loss"], io["out.total_t2i_cfg"], **TOL)
    logvar = LiTDistillationLoss(variance_target="log_variance")(s_out, x0, x_t, t, noise, t_out)
    torch.testing.assert_close(logvar["variance_kd"], io["out.var_kd_logvar"], **TOL)


def test_distillation_gradients_reach_the_student_only():
    student = LiTTransformer2DModel(sample_size=8, hidden_size=32, depth=1, num_heads=2, num_classes=3)
    teacher = VzDiTTransformer2DModel(sample_size=8, hidden_size=32, depth=1, num_heads=2, num_classes=3)
    for model in (student, teacher):
        torch.nn.init.normal_(model.final_layer.linear.weight, std=0.1)
    loss = LiTDistillationLoss()
    x0, noise, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([3, 700])
    x_t = loss.diffusion.q_sample(x0, t, noise)
    terms = loss(student(x_t, t).sample, x0, x_t, t, noise, teacher(x_t, t).sample)
    terms["loss"].mean().backward()
    assert student.final_layer.linear.weight.grad.abs().sum() > 0
    assert teacher.final_layer.linear.weight.grad is None
    with pytest.raises(ValueError, match="does not match the student's"):
        loss(student(x_t, t).sample, x0, x_t, t, noise, torch.zeros(2, 8, 4, 4))


def test_decoder_likelihood_at_t0_and_tables():
    diffusion = GaussianDiffusion()
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    torch.testing.assert_close(diffusion.tables["sqrt_alphas_cumprod"][999],
                               torch.cumprod(1 - betas, 0)[999].sqrt().float())
    # the sampler's schedule is the training one (diffusers computes it in float32)
    torch.testing.assert_close(ddpm_scheduler().betas, diffusion.tables["betas"])
    # the bins of the discretised likelihood: exact normal CDF differences within the tanh approximation's error
    x = torch.tensor([-1.0, -0.3, 0.5, 1.0])
    means, log_scales = torch.tensor([-0.9, -0.31, 0.45, 0.9]), torch.full((4,), -3.0)
    cdf = lambda u: torch.special.ndtr((u - means) / log_scales.exp())  # noqa: E731
    exact = (cdf(x + 1 / 255) - cdf(x - 1 / 255)).log()
    exact[0], exact[3] = cdf(x + 1 / 255)[0].log(), (1 - cdf(x - 1 / 255))[3].log()  # open outer bins
    torch.testing.assert_close(discretized_gaussian_log_likelihood(x, means, log_scales), exact, atol=2e-3, rtol=2e-3)
    # at t = 0 the VLB term is the decoder NLL in bits per dimension
    x0, eps, v = torch.rand(1, 2, 2, 2) * 2 - 1, torch.randn(1, 2, 2, 2), torch.zeros(1, 2, 2, 2)
    t0 = torch.tensor([0])
    x_t = diffusion.q_sample(x0, t0, eps)
    mean, log_variance, _ = diffusion.p_mean_variance(eps, v, x_t, t0)
    nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_variance).mean() / torch.log(torch.tensor(2.0))
    torch.testing.assert_close(diffusion.vb_terms_bpd(eps, v, x0, x_t, t0), nll[None])
