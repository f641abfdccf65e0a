"""PPL's model side (vitzoo.aigi): losses on hand-computed cases, patch mixing, attribution, tiled inference,
metrics against scikit-learn, and the detector's fine-tuning modes (peft LoRA, partial) on tiny backbones.

No official PPL code exists (../shared/specs/ppl.md §0), so every formula is checked against numbers
worked out by hand in the comments."""

from __future__ import annotations

import io
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import nn

from vitzoo.aigi import (DetectorOutput, PatchDetector, apply_rpr, binary_metrics, cde_map, num_mixed_patches,
                         patch_contrastive_loss, patch_infonce_loss, per_generator_metrics, ppl_loss, predict_large,
                         probe_map, random_patch_replacement, randomized_patch_reconstruction)

TINY_VZVIT = dict(embed_dim=32, depth=2, num_heads=2, img_size=28, patch_size=14)


def tiny_detector(**kwargs) -> PatchDetector:
    torch.manual_seed(0)
    return PatchDetector("vzvit_tiny", backbone_kwargs=dict(TINY_VZVIT), **kwargs)


# ---- losses (spec §3.3) ----

def test_contrastive_loss_hand_computed_unnormalised():
    # tokens x1=(0,0) x2=(1,0) | x3=(0,1) x4=(0,.5), labels 0 0 1 1
    # d²: 12=1, 13=1, 14=.25, 23=2, 24=1.25, 34=.25
    # same-label pairs: d²12 + d²34 = 1.25; different-label hinge max(0, 1 − d²): 0 + .75 + 0 + 0 = .75
    # ordered pairs: 2·(1.25 + .75) = 4 over 4·3 = 12 pairs -> 1/3
    tokens = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.5]])
    labels = torch.tensor([0, 0, 1, 1])
    loss = patch_contrastive_loss(tokens, labels, margin=1.0, normalize=False)
    assert loss.item() == pytest.approx(1 / 3, abs=1e-6)
    # margin 2: hinge terms 1 + 1.75 + 0 + .75 = 3.5, so 2·(1.25 + 3.5) / 12
    assert patch_contrastive_loss(tokens, labels, 2.0, normalize=False).item() == pytest.approx(9.5 / 12, abs=1e-6)
    # margin 0: different-label pairs cost nothing, only the pull remains: 2·1.25 / 12
    assert patch_contrastive_loss(tokens, labels, 0.0, normalize=False).item() == pytest.approx(2.5 / 12, abs=1e-6)


def test_contrastive_loss_hand_computed_normalised_grid_shape():
    # unit directions (1,0) (.6,.8) | (-1,0) (0,1), scaled by 2, 5, .5, 3 (normalisation removes the scales)
    # d² = 2 − 2cos: 12=.8, 13=4, 14=2, 23=3.2, 24=.4, 34=2
    # same (labels 1 1 0 0): .8 + 2 = 2.8; hinge: max(0, 1−4)=0, 1−2 -> 0, 1−3.2 -> 0, 1−.4=.6
    # 2·(2.8 + .6) / 12 = 6.8 / 12
    units = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0], [0.0, 1.0]])
    tokens = (units * torch.tensor([[2.0], [5.0], [0.5], [3.0]])).reshape(1, 2, 2, 2)
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 2, 2)
    assert patch_contrastive_loss(tokens, labels).item() == pytest.approx(6.8 / 12, abs=1e-6)


def test_contrastive_loss_margin_behaviour_and_gradients():
    tokens = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)  # d² = 2 after normalising
    different = torch.tensor([0, 1])
    # a different-label pair farther apart than the margin costs nothing; nearer than it, α − d²
    assert patch_contrastive_loss(tokens, different, margin=1.0).item() == 0.0
    assert patch_contrastive_loss(tokens, different, margin=3.0).item() == pytest.approx(1.0, abs=1e-6)
    # identical tokens: same label costs 0 (and the gradient at d = 0 is finite), different labels cost α
    same_point = torch.ones(2, 3, requires_grad=True)
    loss = patch_contrastive_loss(same_point, torch.tensor([1, 1]))
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and torch.isfinite(same_point.grad).all()
    assert patch_contrastive_loss(torch.ones(2, 3), different, margin=0.7).item() == pytest.approx(0.7, abs=1e-6)


def test_contrastive_loss_subsampling_is_seeded_and_checks_shapes():
    tokens, labels = torch.randn(2, 4, 4, 8), torch.randint(0, 2, (2, 4, 4))
    first = patch_contrastive_loss(tokens, labels, max_tokens=10, generator=torch.Generator().manual_seed(3))
    again = patch_contrastive_loss(tokens, labels, max_tokens=10, generator=torch.Generator().manual_seed(3))
    assert first.item() == again.item()
    # no sub-sampling when there are fewer tokens than max_tokens
    assert patch_contrastive_loss(tokens, labels, max_tokens=100).item() == pytest.approx(
        patch_contrastive_loss(tokens, labels).item())
    with pytest.raises(ValueError, match="disagree"):
        patch_contrastive_loss(tokens, labels[:, :2])


def test_infonce_hand_computed():
    # x1 = x2 = (1,0) label 0, x3 = x4 = (0,1) label 1, τ = .5: cos to the positive 1, to both others 0
    # every anchor: −log(e^{1/.5} / (e^{1/.5} + e^0 + e^0)) = log(1 + 2e^{−2})
    tokens = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    loss = patch_infonce_loss(tokens, torch.tensor([0, 0, 1, 1]), temperature=0.5)
    assert loss.item() == pytest.approx(math.log(1 + 2 * math.exp(-2)), abs=1e-6)  # 0.239543
    # with one anchor of its own label (no positive) it leaves the mean: x1, x2 as above over {x2 / x1, x3}
    loss = patch_infonce_loss(tokens[:3], torch.tensor([0, 0, 1]), temperature=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)  # 0.126928


def test_ppl_loss_weights():
    # the normalised hand case above (L_con = 6.8/12 = .566667), one image with logit 0 and label 1
    # (BCE = log 2), patch logits 0 (patch BCE = log 2): .3·.566667 + .7·.693147 + 1·.693147 = 1.348350
    units = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0], [0.0, 1.0]]).reshape(1, 2, 2, 2)
    patch_labels = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 2, 2)
    output = DetectorOutput(logit=torch.zeros(1), image_embed=torch.zeros(1, 2), patch_embed=units,
                            patch_logit=torch.zeros(1, 2, 2))
    total, terms = ppl_loss(output, torch.ones(1), patch_labels)
    assert total.item() == pytest.approx(0.3 * 6.8 / 12 + 0.7 * math.log(2) + math.log(2), abs=1e-6)
    assert terms["contrastive"].item() == pytest.approx(6.8 / 12, abs=1e-6)
    assert terms["bce"].item() == pytest.approx(math.log(2), abs=1e-6)
    assert terms["loss"].item() == pytest.approx(total.item())
    total, terms = ppl_loss(output, torch.ones(1), patch_labels, lam=0.5, patch_probe_weight=0.0)
    assert total.item() == pytest.approx(0.5 * 6.8 / 12 + 0.5 * math.log(2), abs=1e-6) and "patch_bce" not in terms
    total, _ = ppl_loss(output, torch.ones(1), patch_labels, contrastive="infonce", patch_probe_weight=0.0)
    infonce = patch_infonce_loss(units, patch_labels, 0.5).item()
    assert total.item() == pytest.approx(0.3 * infonce + 0.7 * math.log(2), abs=1e-6)
    with pytest.raises(ValueError, match="contrastive"):
        ppl_loss(output, torch.ones(1), patch_labels, contrastive="triplet")


# ---- patch mixing (spec §1, §3.2) ----

@pytest.mark.parametrize("ratio,grid,expected", [(0.5, (4, 6), 12), (0.3, (3, 3), 3), (0.5, (3, 3), 5),
                                                 (0.0, (2, 2), 0), (1.0, (2, 3), 6)])
def test_rpr_replaces_exactly_round_ratio_patches(ratio, grid, expected):
    assert num_mixed_patches(ratio, *grid) == expected
    real = torch.rand(3, 3, grid[0] * 2, grid[1] * 2)
    _, labels = randomized_patch_reconstruction(real, real + 10, ratio, patch=2,
                                                generator=torch.Generator().manual_seed(0))
    assert labels.shape == (3, *grid) and (labels.sum(dim=(1, 2)) == expected).all()


def test_rpr_pixels_match_labels_and_are_seeded():
    real = torch.rand(2, 3, 12, 18)
    recon = real + 10
    mixed, labels = randomized_patch_reconstruction(real, recon, 0.5, patch=6, generator=torch.Generator().manual_seed(1))
    pixel_labels = labels.repeat_interleave(6, 1).repeat_interleave(6, 2)[:, None].expand_as(real).bool()
    assert torch.equal(mixed[pixel_labels], recon[pixel_labels])
    assert torch.equal(mixed[~pixel_labels], real[~pixel_labels])
    again, labels_again = randomized_patch_reconstruction(real, recon, 0.5, patch=6,
                                                          generator=torch.Generator().manual_seed(1))
    assert torch.equal(mixed, again) and torch.equal(labels, labels_again)
    _, other = randomized_patch_reconstruction(real, recon, 0.5, patch=6, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(labels, other)


def test_random_patch_replacement_is_the_v1_direction():
    # v1: a fake with real patches pasted in; label 1 where the fake remains
    fake, real = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8) + 10
    mixed, labels = random_patch_replacement(fake, real, 0.25, patch=2, generator=torch.Generator().manual_seed(0))
    assert (labels.sum(dim=(1, 2)) == 16 - 4).all()
    pixel_labels = labels.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, None].expand_as(fake).bool()
    assert torch.equal(mixed[pixel_labels], fake[pixel_labels])
    assert torch.equal(mixed[~pixel_labels], real[~pixel_labels])


def test_patch_mixing_rejects_bad_shapes():
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        randomized_patch_reconstruction(torch.rand(1, 3, 28, 30), torch.rand(1, 3, 28, 30))
    with pytest.raises(ValueError, match="pixel-aligned"):
        randomized_patch_reconstruction(torch.rand(1, 3, 28, 28), torch.rand(1, 3, 28, 14))
    with pytest.raises(ValueError, match="ratio"):
        randomized_patch_reconstruction(torch.rand(1, 3, 28, 28), torch.rand(1, 3, 28, 28), ratio=1.5)


def test_apply_rpr_per_sample_rule():
    real_partner = torch.zeros(4, 3, 4, 4)
    images = torch.ones(4, 3, 4, 4)  # the fakes: reconstructions of the partners
    labels = torch.tensor([0, 1, 1, 1])
    out = apply_rpr(images, labels, real_partner, p=1.0, ratio=0.5, patch=2,
                    has_aligned=torch.tensor([True, True, True, False]), generator=torch.Generator().manual_seed(0))
    assert out.mixed.tolist() == [False, True, True, False]
    assert (out.patch_labels[0] == 0).all() and (out.patch_labels[3] == 1).all()
    assert (out.patch_labels[1:3].sum(dim=(1, 2)) == 2).all()
    # ICLR form: the real partner with reconstructed patches, so pixels are 1 exactly on label-1 patches
    pixel_labels = out.patch_labels.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, None].expand_as(images)
    assert torch.equal(out.images[1:3], pixel_labels[1:3])
    assert torch.equal(out.images[[0, 3]], images[[0, 3]]) and torch.equal(out.labels, labels)
    again = apply_rpr(images, labels, real_partner, p=1.0, ratio=0.5, patch=2,
                      has_aligned=torch.tensor([True, True, True, False]), generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.images, again.images) and torch.equal(out.patch_labels, again.patch_labels)
    # p = 0 or no partners: nothing mixed, reals all 0, fakes all 1
    for kwargs in (dict(aligned=real_partner, p=0.0), dict(aligned=None)):
        out = apply_rpr(images, labels, patch=2, generator=torch.Generator().manual_seed(0), **kwargs)
        assert not out.mixed.any() and torch.equal(out.patch_labels.mean(dim=(1, 2)), labels.float())
    # v1 direction: the fake keeps label 1 where it remains
    out = apply_rpr(images, labels, real_partner, p=1.0, ratio=0.25, patch=2, mode="replacement",
                    generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.images[1:], out.patch_labels[1:].repeat_interleave(2, 1).repeat_interleave(2, 2)[:, None]
                       .expand(3, 3, 4, 4))
    assert (out.patch_labels[1:].sum(dim=(1, 2)) == 3).all()


# ---- attribution and tiled inference (spec §2, §6) ----

class LooksAtOnePatch(nn.Module):
    """Logit = sum of the pixels of patch (0, 1) on a 2-pixel patch grid; ignores every other patch."""

    patch_size = 2

    def forward(self, images):
        return SimpleNamespace(logit=images[:, :, 0:2, 2:4].sum(dim=(1, 2, 3)), patch_logit=None)


def test_cde_is_zero_where_the_model_does_not_look():
    images = torch.rand(2, 3, 4, 6) + 0.5
    cde = cde_map(LooksAtOnePatch(), images, batch_size=5)
    expected = torch.zeros(2, 2, 3)
    # zeroing the watched patch removes its whole contribution
    expected[:, 0, 1] = images[:, :, 0:2, 2:4].sum(dim=(1, 2, 3))
    assert torch.allclose(cde, expected, atol=1e-5)


def test_cde_and_probe_of_the_detector():
    detector = tiny_detector().eval()
    images = torch.randn(2, 3, 28, 42)
    cde = cde_map(detector, images, batch_size=4)
    assert cde.shape == (2, 2, 3) and torch.isfinite(cde).all() and cde.abs().sum() > 0
    probe = probe_map(detector, images, upsample=True)
    assert probe.shape == (2, 28, 42) and ((probe > 0) & (probe < 1)).all()


def test_predict_large_on_a_crop_size_input_equals_forward():
    detector = tiny_detector().eval()
    images = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        output = detector(images)
    large = predict_large(detector, images, crop=28)
    assert torch.allclose(large.logit, output.logit, atol=1e-5)
    assert torch.allclose(large.heatmap, output.patch_logit.sigmoid(), atol=1e-5)


def test_predict_large_tiles_pads_and_stitches():
    detector = tiny_detector().eval()
    image = torch.randn(3, 40, 56)  # rows: 0, 14 (padded to 42); cols: 0, 14, 28
    large = predict_large(detector, image, crop=28, stride=14, agg="max_logit")
    assert large.tile_logit.shape == (1, 2, 3) and large.heatmap.shape == (1, 3, 4)
    with torch.no_grad():
        corner = detector(image[None, :, 0:28, 28:56])
    assert large.tile_logit[0, 0, 2].item() == pytest.approx(corner.logit.item(), abs=1e-5)
    assert large.logit.item() == pytest.approx(large.tile_logit.max().item())
    # the top-right patch is seen only by that tile
    assert large.heatmap[0, 0, 3].item() == pytest.approx(corner.patch_logit.sigmoid()[0, 0, 1].item(), abs=1e-5)
    with pytest.raises(ValueError, match="multiples of the patch size"):
        predict_large(detector, image, crop=28, stride=10)


# ---- metrics (spec §4) ----

def test_binary_metrics_equal_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.clip(rng.normal(0.4 + 0.2 * labels, 0.2), 0, 1)
    result = binary_metrics(torch.tensor(scores), torch.tensor(labels))
    assert result["ap"] == pytest.approx(average_precision_score(labels, scores))
    assert result["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert result["acc"] == pytest.approx(((scores >= 0.5) == labels).mean())
    assert result["acc_real"] == pytest.approx((scores[labels == 0] < 0.5).mean())
    assert result["acc_fake"] == pytest.approx((scores[labels == 1] >= 0.5).mean())


def test_per_generator_mean_and_std_by_hand():
    # generator a: real .2 .6, fake .7 .9 -> acc 3/4, acc_real 1/2, acc_fake 1, AUC 1
    # generator b: real .1, fake .4 .8 -> acc 2/3, acc_fake 1/2, AUC 1
    # mean acc (3/4 + 2/3)/2 = 17/24; population std |3/4 − 2/3| / 2 = 1/24
    scores = [0.2, 0.6, 0.7, 0.9, 0.1, 0.4, 0.8]
    labels = [0, 0, 1, 1, 0, 1, 1]
    table = per_generator_metrics(scores, labels, ["a"] * 4 + ["b"] * 3)
    assert table.rows["a"]["acc"] == pytest.approx(0.75) and table.rows["b"]["acc_fake"] == pytest.approx(0.5)
    assert table.mean["acc"] == pytest.approx(17 / 24) and table.std["acc"] == pytest.approx(1 / 24)
    assert table.mean["acc_real"] == pytest.approx(0.75) and table.std["acc_real"] == pytest.approx(0.25)
    assert table.mean["auc"] == 1.0 and table.std["auc"] == 0.0 and table.rows["b"]["count"] == 3
    assert "| mean ± std |" in table.to_markdown()


def test_a_generator_with_one_class_gives_nan_and_a_note():
    table = per_generator_metrics([0.9, 0.3, 0.2, 0.7], [1, 1, 0, 1], ["only_fake", "only_fake", "mix", "mix"])
    row = table.rows["only_fake"]
    assert math.isnan(row["auc"]) and math.isnan(row["ap"]) and math.isnan(row["acc_real"])
    assert row["acc_fake"] == 0.5 and "only_fake" in table.notes and "undefined" in table.notes["only_fake"]
    assert table.mean["auc"] == 1.0  # the NaN is left out of the mean
    assert table.to_dict()["generators"]["only_fake"]["auc"] is None


# ---- the detector ----

def test_detector_outputs_and_input_checks():
    detector = tiny_detector(finetune="frozen")
    output = detector(torch.randn(2, 3, 28, 42))
    assert output.logit.shape == (2,) and output.image_embed.shape == (2, 32)
    assert output.patch_embed.shape == (2, 2, 3, 32) and output.patch_logit.shape == (2, 2, 3)
    assert detector.data_config["input_size"] == (3, 28, 28) and len(detector.data_config["mean"]) == 3
    with pytest.raises(ValueError, match="3-channel"):
        detector(torch.randn(1, 1, 28, 28))
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        detector(torch.randn(1, 3, 28, 30))
    assert PatchDetector("vzvit_tiny", backbone_kwargs=dict(TINY_VZVIT), patch_head=False)(
        torch.randn(1, 3, 28, 28)).patch_logit is None


def test_detector_without_cls_token_pools_patches():
    detector = PatchDetector("vzvit_tiny", backbone_kwargs=dict(TINY_VZVIT, class_token=False, global_pool="avg"),
                             finetune="frozen")
    output = detector(torch.randn(2, 3, 28, 28))
    assert torch.allclose(output.image_embed, output.patch_embed.mean(dim=(1, 2)), atol=1e-6)


def test_timm_vits_with_lora():
    detector = PatchDetector("vit_tiny_patch16_224", backbone_kwargs=dict(img_size=32))
    assert detector.lora_targets[:2] == ["blocks.0.attn.qkv", "blocks.0.attn.proj"]
    assert detector.data_config["mean"] == (0.5, 0.5, 0.5)
    assert detector(torch.randn(1, 3, 32, 32)).patch_embed.shape == (1, 2, 2, 192)
    with pytest.raises(ValueError, match="dynamic_img_size"):
        detector(torch.randn(1, 3, 48, 48))
    # DINOv2 with 4 register tokens: 5 prefix tokens, the cls token first
    dinov2 = PatchDetector("vit_small_patch14_reg4_dinov2", backbone_kwargs=dict(img_size=28), finetune="frozen")
    assert dinov2.num_prefix_tokens == 5 and dinov2(torch.randn(1, 3, 28, 28)).patch_embed.shape == (1, 2, 2, 384)


def test_clip_vit_config_and_norm_constants():
    # timm's CLIP ViT layout (norm_pre, final norm) at tiny widths; CLIP's own mean / std come through
    detector = PatchDetector("vit_base_patch16_clip_224",
                             backbone_kwargs=dict(img_size=32, embed_dim=32, depth=2, num_heads=2))
    assert detector.data_config["mean"] == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert detector(torch.randn(1, 3, 32, 32)).patch_embed.shape == (1, 2, 2, 32)


@pytest.mark.parametrize("mixer", ["lightnet", "linfusion", "lit", "rala"])
def test_default_lora_targets_follow_each_mixer(mixer):
    # the mixers name their projections differently; the default targets every Linear of the mixer
    detector = PatchDetector("vzvit_tiny", backbone_kwargs=dict(TINY_VZVIT, mixer=mixer))
    assert detector.lora_targets and all(".attn." in name for name in detector.lora_targets)
    assert detector(torch.randn(1, 3, 28, 28)).patch_embed.shape == (1, 2, 2, 32)


def test_lora_trains_only_adapters_and_heads():
    detector = tiny_detector(lora_rank=4)
    trainable = {name for name, param in detector.named_parameters() if param.requires_grad}
    assert trainable and all(".lora_" in name or name.startswith(("head.", "patch_head.")) for name in trainable)
    assert any(".attn.qkv.lora_A." in name for name in trainable)
    before = {name: value.clone() for name, value in detector.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in detector.parameters() if p.requires_grad], lr=0.1)
    images, labels = torch.randn(2, 3, 28, 28), torch.tensor([0.0, 1.0])
    output = detector(images)
    loss, _ = ppl_loss(output, labels, labels[:, None, None].expand(2, 2, 2))
    loss.backward()
    optimizer.step()
    changed = {name for name, value in detector.state_dict().items() if not torch.equal(value, before[name])}
    assert changed and changed <= trainable
    assert "head.weight" in changed and any(".lora_B." in name for name in changed)


def test_lora_save_load_and_merge():
    detector = tiny_detector()
    for module in detector.modules():
        if hasattr(module, "lora_B"):
            nn.init.normal_(module.lora_B["default"].weight)
    buffer = io.BytesIO()
    torch.save(detector.trainable_state_dict(), buffer)
    buffer.seek(0)
    restored = tiny_detector()  # same seed: the same base weights, as from one pretrained file
    restored.load_trainable_state_dict(torch.load(buffer))
    images = torch.randn(2, 3, 28, 28)
    detector.eval(), restored.eval()
    with torch.no_grad():
        expected = detector(images)
        assert torch.allclose(restored(images).logit, expected.logit, atol=1e-6)
        detector.merge_lora()
        merged = detector(images)
    assert detector.is_merged and not any("lora" in key for key in detector.state_dict())
    assert torch.allclose(merged.logit, expected.logit, atol=1e-5)
    assert torch.allclose(merged.patch_logit, expected.patch_logit, atol=1e-5)
    with pytest.raises(ValueError, match="missing"):
        restored.load_trainable_state_dict({"head.weight": torch.zeros(1, 32)})


def test_partial_finetuning_trains_the_last_blocks():
    detector = tiny_detector(finetune="partial", partial_blocks=1)
    trainable = {name for name, param in detector.named_parameters() if param.requires_grad}
    assert trainable and all(name.startswith(("backbone.blocks.1.", "backbone.norm.", "head.", "patch_head."))
                             for name in trainable)
    assert "backbone.norm.weight" in trainable and "backbone.blocks.1.attn.qkv.weight" in trainable
    with pytest.raises(ValueError, match="partial_blocks"):
        tiny_detector(finetune="partial", partial_blocks=3)
    full = tiny_detector(finetune="full")
    assert all(param.requires_grad for param in full.parameters())


@pytest.mark.parametrize("name", ["ravlt_t", "resnet18"])
def test_backbones_without_patch_tokens_are_refused(name):
    with pytest.raises(ValueError, match="exposes no patch tokens.*vzvit"):
        PatchDetector(name, finetune="frozen")


def test_bad_detector_arguments():
    with pytest.raises(ValueError, match="no nn.Linear .* matches"):
        tiny_detector(lora_targets=[r"nothing_here"])
    with pytest.raises(ValueError, match="finetune"):
        tiny_detector(finetune="adapter")
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        PatchDetector("vzvit_tiny", pretrained_file="/nonexistent/weights.pth")
    with pytest.raises(ValueError, match="'resnet18' cannot be built with img_size .* supported: plain ViT"):
        PatchDetector("resnet18", backbone_kwargs=dict(img_size=28))
