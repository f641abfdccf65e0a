"""Training configs: every file parses into valid ``vitzoo train`` flags, records a consistent global batch, and
names a model that builds with its arguments; every registered model has its ImageNet recipe."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import vitzoo
from vitzoo.commands.train import parse_args as parse_train_args

ROOT = Path(__file__).resolve().parents[1]
IMAGENET = sorted((ROOT / "configs" / "imagenet").glob("*.yaml"))
TRAIN_CONFIGS = IMAGENET + sorted((ROOT / "configs" / "demo").glob("*.yaml"))

# the variants of the issue and the specs; each needs its published recipe
EXPECTED = (
    ["vzvit_tiny", "vzvit_small", "vzvit_base"]
    + [f"lightnet_{s}" for s in ("tiny", "small", "base")]
    + [f"inline_deit_{s}" for s in ("tiny", "small", "base")]
    + [f"inline_pvt_{s}" for s in ("tiny", "small", "medium", "large")]
    + [f"inline_{f}_{s}" for f in ("swin", "cswin") for s in ("tiny", "small", "base", "base_384")]
    + [f"{f}_{s}" for f in ("ravlt", "mavit") for s in ("t", "s", "b", "l")]
    + [f"l2vit_{s}" for s in ("tiny", "small", "base", "base_384")]
)
RECIPE = re.compile(r"^# recipe: global_batch=(\d+) gpus=(\d+) per_gpu_batch=(\d+) grad_accum=(\d+)$", re.M)


def test_every_variant_and_every_registered_model_has_an_imagenet_recipe():
    names = {path.stem for path in IMAGENET}
    assert names == set(EXPECTED)
    missing = sorted(set(vitzoo.list_models()) - names)
    assert not missing, f"registered models without configs/imagenet/<model>.yaml: {missing}"


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_parses_into_valid_train_flags(path):
    args = parse_train_args(["-c", str(path), "--data-dir", "unused"])
    if path.parent.name != "imagenet":
        return
    assert args.model == path.stem
    found = RECIPE.search(path.read_text())
    assert found, f"{path.name} must record '# recipe: global_batch=... gpus=... per_gpu_batch=... grad_accum=...'"
    global_batch, gpus, per_gpu, accum = map(int, found.groups())
    assert (per_gpu, accum) == (args.batch_size, args.grad_accum_steps)
    assert global_batch == gpus * per_gpu * accum
    assert args.epochs >= 20 and args.opt == "adamw" and args.sched == "cosine" and args.smoothing == 0.1
    assert args.lr is None and args.lr_base_scale == "linear"  # the lr follows the global batch
    assert args.img_size in (224, 288, 384, 448) and args.drop_path is not None


# configs whose model is registered on this branch (all of them once every family is merged)
BUILDABLE = [path for path in TRAIN_CONFIGS
             if parse_train_args(["-c", str(path), "--data-dir", "x"]).model in vitzoo.list_models()]


@pytest.mark.parametrize("path", BUILDABLE, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_model_builds_with_its_arguments(path):
    import timm

    args = parse_train_args(["-c", str(path), "--data-dir", "unused"])
    kwargs = dict(args.model_kwargs, num_classes=10 if args.dataset else 1000)
    if args.drop_path is not None:
        kwargs["drop_path_rate"] = args.drop_path
    with torch.device("meta"):
        model = timm.create_model(args.model, **kwargs)
    assert model.num_classes == kwargs["num_classes"]
    assert sum(p.numel() for p in model.parameters()) > 0
