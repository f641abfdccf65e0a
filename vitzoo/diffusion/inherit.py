"""Weight inheritance: start a LiT from a pretrained DiT (LiT guideline 4, arXiv:2501.12976).

Everything but the attention is copied from the DiT: patch embedding, position table, timestep and
label embedders, every block's adaLN and MLP, and the final layer. The attention of a LiT block has
other parameters (``q``, ``kv``, ``dwc``) than DiT's (``qkv``), and the paper found that loading any
of them does not help, so the class-conditional rule drops every DiT key containing ``attn``
(``attn.proj`` included) and the attention keeps the student's own initialisation. The text-to-image
code of LiT loads with ``strict=False`` instead, which also inherits ``attn.proj`` (same name and shape);
both rules are offered (spec ``../shared/specs/lit.md`` §4).

A DiT comes as the official ``.pt`` (``DiT-XL-2-256x256.pt`` holds the EMA weights; a training
checkpoint holds ``ema`` and ``model``), a vitzoo checkpoint, or diffusers' ``DiTTransformer2DModel``
(a model, a model folder or a pipeline folder), whose keys :func:`dit_state_dict_from_diffusers` maps back.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ..models._checkpoint import CheckpointError, read_checkpoint, select_state_dict
from .dit import sincos_pos_embed_2d

__all__ = [
    "INHERITANCE_RULES",
    "InheritanceReport",
    "dit_config_from_state_dict",
    "dit_state_dict_from_diffusers",
    "inherit_from_dit",
    "load_dit_state_dict",
    "plan_inheritance",
]

_logger = logging.getLogger("vitzoo.diffusion")

INHERITANCE_RULES = ("class2image", "text2image")

# the official DiT training checkpoint keeps both; sampling and LiT's initialisation use the EMA weights
DIT_WEIGHT_KEYS = ("ema", "model", "state_dict")

Shapes = Mapping[str, Sequence[int]]


@dataclass
class InheritanceReport:
    """What an inheritance copied. Keys are the student's (official DiT/LiT names).

    Attributes:
        inherited: student keys whose values came from the DiT.
        new: student keys left at the student's initialisation.
        dropped: DiT keys the rule excluded (``attn.*`` for class2image).
        unexpected: DiT keys the student has no place for (``attn.qkv`` under text2image).
        inherited_params / new_params: element counts of the two student sets.
    """

    rule: str
    inherited: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    inherited_params: int = 0
    new_params: int = 0

    def summary(self) -> str:
        return (f"{self.rule}: inherited {len(self.inherited)} tensors ({self.inherited_params:,} values), "
                f"new {len(self.new)} ({self.new_params:,}), dropped {len(self.dropped)}, "
                f"unexpected {len(self.unexpected)}")


def _is_attention_key(key: str) -> bool:
    # the official class2image filter is the substring test ``'attn' in key``
    return "attn" in key


def plan_inheritance(student: Shapes, teacher: Shapes, rule: str = "class2image") -> InheritanceReport:
    """Which keys an inheritance copies, from key names and shapes alone (works for full-size manifests).

    Args:
        student: the LiT state-dict keys and shapes.
        teacher: the DiT state-dict keys and shapes (official names).
        rule: ``"class2image"`` (drop every key containing ``attn``, the paper's rule) or ``"text2image"``
            (``strict=False``: copy every key present in both).

    Raises:
        CheckpointError: a copied key has different shapes (a DiT of another size), or a non-attention
            student key has no DiT counterpart (not a DiT of this architecture).
    """
    if rule not in INHERITANCE_RULES:
        raise ValueError(f"rule must be one of {INHERITANCE_RULES}, got {rule!r}")
    report = InheritanceReport(rule)
    candidates = {}
    for key, shape in teacher.items():
        if rule == "class2image" and _is_attention_key(key):
            report.dropped.append(key)
        elif key in student:
            candidates[key] = shape
        else:
            report.unexpected.append(key)
    mismatched = [f"{k} {tuple(s)} vs student {tuple(student[k])}" for k, s in candidates.items()
                  if tuple(s) != tuple(student[k])]
    if mismatched:
        raise CheckpointError(f"the DiT does not match the student's size: {len(mismatched)} shape mismatches "
                              f"({', '.join(mismatched[:4])})")
    for key, shape in student.items():
        count = math.prod(shape)
        if key in candidates:
            report.inherited.append(key)
            report.inherited_params += count
        else:
            report.new.append(key)
            report.new_params += count
    lacking = [k for k in report.new if not _is_attention_key(k)]
    if lacking:
        raise CheckpointError(f"the DiT lacks {len(lacking)} non-attention keys of the student "
                              f"({', '.join(lacking[:6])}); is it a DiT of this architecture?")
    return report


def dit_state_dict_from_diffusers(state_dict: Mapping[str, torch.Tensor],
                                  grid_size: Union[int, tuple[int, int], None] = None) -> dict[str, torch.Tensor]:
    """diffusers' ``DiTTransformer2DModel`` weights -> the official DiT key names.

    diffusers keeps a copy of the timestep and label embedders in every block (``norm1.emb``); the
    official model has one. The copies must agree (they do in every converted DiT); otherwise the model
    cannot be expressed with one embedder and this raises. ``to_q``/``to_k``/``to_v`` are concatenated into
    ``attn.qkv``. diffusers does not store the fixed position table; give ``grid_size`` (tokens per side)
    to include it.
    """
    sd = dict(state_dict)
    out: dict[str, torch.Tensor] = {}
    blocks = sorted({int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks.")})
    if not blocks or "pos_embed.proj.weight" not in sd:
        raise CheckpointError("not a diffusers DiTTransformer2DModel state dict "
                              "(no transformer_blocks / pos_embed.proj)")
    emb = "transformer_blocks.{}.norm1.emb."
    for key in [k for k in sd if k.startswith(emb.format(blocks[0]))]:
        suffix = key[len(emb.format(blocks[0])):]
        for i in blocks[1:]:
            if not torch.equal(sd[emb.format(i) + suffix], sd[key]):
                raise CheckpointError(f"block {i}'s copy of {suffix} differs from block {blocks[0]}'s; the official "
                                      "DiT has one shared embedder, so these weights cannot be converted")
    renames = {
        "timestep_embedder.linear_1.": "t_embedder.mlp.0.",
        "timestep_embedder.linear_2.": "t_embedder.mlp.2.",
        "class_embedder.embedding_table.": "y_embedder.embedding_table.",
    }
    for suffix in ("weight", "bias"):
        out[f"x_embedder.proj.{suffix}"] = sd[f"pos_embed.proj.{suffix}"]
        out[f"final_layer.adaLN_modulation.1.{suffix}"] = sd[f"proj_out_1.{suffix}"]
        out[f"final_layer.linear.{suffix}"] = sd[f"proj_out_2.{suffix}"]
        for old, new in renames.items():
            if emb.format(blocks[0]) + old + suffix in sd:
                out[new + suffix] = sd[emb.format(blocks[0]) + old + suffix]
        for i in blocks:
            src, dst = f"transformer_blocks.{i}.", f"blocks.{i}."
            out[f"{dst}adaLN_modulation.1.{suffix}"] = sd[f"{src}norm1.linear.{suffix}"]
            out[f"{dst}attn.qkv.{suffix}"] = torch.cat([sd[f"{src}attn1.to_{p}.{suffix}"] for p in "qkv"])
            out[f"{dst}attn.proj.{suffix}"] = sd[f"{src}attn1.to_out.0.{suffix}"]
            out[f"{dst}mlp.fc1.{suffix}"] = sd[f"{src}ff.net.0.proj.{suffix}"]
            out[f"{dst}mlp.fc2.{suffix}"] = sd[f"{src}ff.net.2.{suffix}"]
    if grid_size is not None:
        grid = (grid_size, grid_size) if isinstance(grid_size, int) else tuple(grid_size)
        out["pos_embed"] = sincos_pos_embed_2d(out["x_embedder.proj.weight"].shape[0], grid)
    return out


def _is_diffusers_dit(state_dict: Mapping[str, Any]) -> bool:
    return any(k.startswith("transformer_blocks.") for k in state_dict)


def _read_diffusers_folder(path: Path) -> dict[str, torch.Tensor]:
    """A diffusers model folder (``config.json`` + weights), or a pipeline folder holding ``transformer/``."""
    if (path / "transformer" / "config.json").is_file():
        path = path / "transformer"
    config = json.loads((path / "config.json").read_text())
    weights = (sorted(path.glob("diffusion_pytorch_model*.safetensors"))
               or sorted(path.glob("diffusion_pytorch_model*.bin")))
    if not weights:
        raise FileNotFoundError(f"no diffusion_pytorch_model weights in {path}")
    state_dict: dict[str, torch.Tensor] = {}
    for file in weights:
        state_dict.update(select_state_dict(read_checkpoint(file)) if file.suffix == ".bin" else read_checkpoint(file))
    if _is_diffusers_dit(state_dict):
        grid = config.get("sample_size", 32) // config.get("patch_size", 2)
        return dit_state_dict_from_diffusers(state_dict, grid)
    return state_dict


def load_dit_state_dict(source: Union[str, Path, nn.Module, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """A DiT's weights under the official key names, from any supported form.

    Args:
        source: an official DiT ``.pt``/``.pth`` (flat EMA state dict, or a training checkpoint with
            ``ema``/``model``; read without executing pickled objects), a ``.safetensors`` file, a diffusers
            model or pipeline folder, a diffusers ``DiTTransformer2DModel``, a
            :class:`~vitzoo.diffusion.dit.VzDiTTransformer2DModel`, or a state dict of either naming.
    """
    if isinstance(source, nn.Module):
        state_dict = source.state_dict()
        if _is_diffusers_dit(state_dict):
            config = getattr(source, "config", {})
            return dit_state_dict_from_diffusers(state_dict, config["sample_size"] // config["patch_size"])
        return dict(state_dict)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            return _read_diffusers_folder(path)
        state_dict = select_state_dict(read_checkpoint(path), DIT_WEIGHT_KEYS)
    else:
        state_dict = dict(source)
    if _is_diffusers_dit(state_dict):
        return dit_state_dict_from_diffusers(state_dict)
    return state_dict


def inherit_from_dit(student: nn.Module, source: Any, *, rule: str = "class2image") -> InheritanceReport:
    """Copy a DiT's weights into a LiT (or any DiT-layout student) in place and report what was new.

    Args:
        student: a freshly initialised :class:`~vitzoo.diffusion.lit.LiTTransformer2DModel`.
        source: the DiT, in any form :func:`load_dit_state_dict` reads.
        rule: ``"class2image"`` (default; the paper's: no attention weight is loaded) or ``"text2image"``
            (``attn.proj`` is loaded too, as LiT's PixArt code does).

    Returns:
        the :class:`InheritanceReport`; ``report.new`` lists the keys that kept the student's init.
    """
    teacher = load_dit_state_dict(source)
    own = student.state_dict()
    if "pos_embed" not in teacher and "pos_embed" in own:
        # diffusers stores no position table; the official one is the fixed sin-cos table of the grid
        teacher["pos_embed"] = sincos_pos_embed_2d(own["pos_embed"].shape[-1], _grid_of(student))
    report = plan_inheritance({k: v.shape for k, v in own.items()}, {k: v.shape for k, v in teacher.items()}, rule)
    student.load_state_dict({k: teacher[k] for k in report.inherited}, strict=False)
    _logger.info("DiT -> %s: %s", type(student).__name__, report.summary())
    return report


def _grid_of(student: nn.Module) -> tuple[int, int]:
    config = student.config
    grid = config["sample_size"] // config["patch_size"]
    return grid, grid


# DiT's head count per width (Table 1 of the DiT paper); the weights' shapes do not tell heads apart
_DIT_HEADS = {384: 6, 768: 12, 1024: 16, 1152: 16}


def dit_config_from_state_dict(state_dict: Mapping[str, torch.Tensor],
                               num_heads: Optional[int] = None) -> dict[str, Any]:
    """Constructor arguments of the DiT whose official-key weights these are, read off their shapes.

    The head count is DiT's for the width (S 6, B 12, L and XL 16) unless ``num_heads`` is given; for
    other widths it must be given.
    """
    try:
        patch_weight = state_dict["x_embedder.proj.weight"]  # [D, C, p, p]
        final = state_dict["final_layer.linear.weight"]  # [p·p·out, D]
        table = state_dict["y_embedder.embedding_table.weight"]  # [classes (+1), D]
        fc1 = state_dict["blocks.0.mlp.fc1.weight"]  # [ratio·D, D]
    except KeyError as err:
        raise CheckpointError(f"not a DiT state dict (no {err.args[0]})") from None
    hidden, channels, patch = patch_weight.shape[0], patch_weight.shape[1], patch_weight.shape[-1]
    heads = num_heads or _DIT_HEADS.get(hidden)
    if heads is None:
        raise ValueError(f"cannot tell the head count of a width-{hidden} DiT from its weights; give num_heads")
    out_channels = final.shape[0] // (patch * patch)
    tokens = state_dict["pos_embed"].shape[1] if "pos_embed" in state_dict else None
    depth = len({k.split(".")[1] for k in state_dict if k.startswith("blocks.")})
    # a DiT trained with label dropout has one extra (null) row; DiT always trains with dropout 0.1
    config = dict(hidden_size=hidden, in_channels=channels, patch_size=patch, depth=depth, num_heads=heads,
                  mlp_ratio=fc1.shape[0] / hidden, learn_sigma=out_channels == 2 * channels,
                  num_classes=table.shape[0] - 1, class_dropout_prob=0.1)
    if tokens is not None:
        config["sample_size"] = math.isqrt(tokens) * patch
    return config
