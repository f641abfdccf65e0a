"""LinFusion for diffusers Stable Diffusion UNets: attention processors, official checkpoints, mount/unmount.

Paper: "LinFusion: 1 GPU, 1 Minute, 16K Image", Liu, Yu, Tan and Wang, arXiv:2409.02097.
Origin: https://github.com/Huage001/LinFusion (``src/linfusion/linfusion.py`` at 62ef289; the
repository has no license file). Re-implemented, not copied.

LinFusion replaces the self-attention ``attn1`` of every ``BasicTransformerBlock`` of an SD-1.x,
SD-2.x or SD-XL UNet by generalized linear attention (:class:`vitzoo.mixers.linfusion.LinFusionMixer`)
and leaves everything else (cross-attention ``attn2``, ResNets, ControlNet, IP-Adapter processors,
the VAE) untouched::

    pipe = StableDiffusionPipeline.from_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5")
    linfusion = LinFusion.construct_for(pipe, pretrained="path/to/LinFusion-1-5")   # or a hub id
    image = pipe("a photo of a cat", height=2048, width=2048).images[0]
    linfusion.unmount()                                                              # original attention again

The official code swaps the ``attn1`` modules; here each one keeps its module and gets a
:class:`LinFusionAttnProcessor` through diffusers' ``set_attn_processor`` (the route of diffusers
PR #9596), which gives the same numbers and can be undone. The :class:`LinFusion` container holds the
weights in the official checkpoint layout (``{i}.to_q.weight``, ..., ``i`` indexing ``modules_list``
in ``unet.named_modules()`` order: down blocks, up blocks, mid block), so ``save_pretrained`` writes
files the official code reads and the hub checkpoints load unchanged (stored in fp16; upcast here).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Union

import torch
from torch import nn

from ..mixers.linfusion import LinFusionMixer
from ..models._checkpoint import read_checkpoint, read_checkpoint_metadata, select_state_dict

try:
    from diffusers import ModelMixin
    from diffusers.configuration_utils import ConfigMixin, register_to_config
except ImportError as err:  # pragma: no cover - diffusers is a core dependency
    raise ImportError("vitzoo.diffusion.linfusion needs diffusers: pip install 'diffusers>=0.35'") from err

__all__ = [
    "KNOWN_CHECKPOINTS",
    "LinFusion",
    "LinFusionAttnProcessor",
    "SD_UNET_CONFIGS",
    "self_attention_modules",
    "stable_diffusion_unet",
]

_logger = logging.getLogger("vitzoo.diffusion.linfusion")

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"

# Base pipelines whose LinFusion checkpoint is known: the official table plus the ids diffusers PR #9596 adds.
KNOWN_CHECKPOINTS: dict[str, str] = {
    "runwayml/stable-diffusion-v1-5": "Yuanshi/LinFusion-1-5",
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "Yuanshi/LinFusion-1-5",
    "CompVis/stable-diffusion-v1-4": "Yuanshi/LinFusion-1-5",
    "SG161222/Realistic_Vision_V4.0_noVAE": "Yuanshi/LinFusion-1-5",
    "SG161222/Realistic_Vision_V5.1_noVAE": "Yuanshi/LinFusion-1-5",
    "Lykon/dreamshaper-8": "Yuanshi/LinFusion-1-5",
    "timbrooks/instruct-pix2pix": "Yuanshi/LinFusion-1-5",
    "stabilityai/stable-diffusion-2-1": "Yuanshi/LinFusion-2-1",
    "stabilityai/stable-diffusion-xl-base-1.0": "Yuanshi/LinFusion-XL",
    "stabilityai/sdxl-turbo": "Yuanshi/LinFusion-XL",
    "diffusers/sdxl-instructpix2pix-768": "Yuanshi/LinFusion-XL",
}


class LinFusionAttnProcessor(nn.Module):
    """A diffusers attention processor that runs LinFusion's generalized linear attention.

    It carries its weights (a :class:`LinFusionMixer`) and ignores the projections of the
    ``Attention`` it is installed on, exactly as the official module swap discards them. The steps a
    diffusers processor owes its ``Attention`` around the mixing (spatial norm, 4-D inputs, group
    norm, ``norm_cross``, residual connection, output rescale) are honoured; none of them is active
    on the ``attn1`` of a Stable Diffusion UNet.

    ``attention_mask`` (a key mask) is applied as a per-key weight on φ(K): a boolean mask keeps the
    True keys, an additive bias b (diffusers' 0 / -10000 form) weighs key j by exp(b_j), which is
    what the bias does to the softmax kernel. The official module ignores masks; diffusers never
    passes one to ``attn1`` in SD pipelines.

    Args:
        mixer: the LinFusion weights of this layer (a child of a :class:`LinFusion` container).
    """

    def __init__(self, mixer: Optional[LinFusionMixer] = None):
        if mixer is None:
            # diffusers re-creates processors by class with no arguments when it loads or unloads IP-Adapters
            raise TypeError(
                "LinFusionAttnProcessor needs the LinFusion weights of its layer and cannot be re-created "
                "empty. diffusers does that when IP-Adapters are loaded or unloaded: call linfusion.unmount() "
                "first, load/unload the IP-Adapter, then LinFusion.construct_for(...) or linfusion.mount_to(unet)."
            )
        super().__init__()
        self.mixer = mixer

    def __call__(
            self,
            attn: nn.Module,
            hidden_states: torch.Tensor,
            encoder_hidden_states: Optional[torch.Tensor] = None,
            attention_mask: Optional[torch.Tensor] = None,
            temb: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if encoder_hidden_states is not None and attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        keys = hidden_states.shape[1] if encoder_hidden_states is None else encoder_hidden_states.shape[1]
        weights = _key_weights(attention_mask, hidden_states.shape[0], keys)
        hidden_states = self.mixer.attend(hidden_states, encoder_hidden_states, key_weights=weights)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(1, 2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def _key_weights(mask: Optional[torch.Tensor], batch: int, keys: int) -> Optional[torch.Tensor]:
    """A key mask ([B, Nk] or [B, 1, Nk], boolean or additive bias) as per-key weights [B, Nk]."""
    if mask is None:
        return None
    if mask.dim() == 3 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.shape != (batch, keys):
        raise ValueError(f"LinFusion supports key masks of shape [B, Nk] or [B, 1, Nk] = ({batch}, {keys}); "
                         f"got {tuple(mask.shape)} (per-query masks have no linear-attention form)")
    return mask.float() if mask.dtype == torch.bool else mask.float().exp()


def self_attention_modules(unet: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``attn1`` self-attention modules of a diffusers UNet, in ``named_modules()`` order (the
    order of the official checkpoint index: down blocks, up blocks, mid block)."""
    return [(name, module) for name, module in unet.named_modules()
            if name.rsplit(".", 1)[-1] == "attn1" and hasattr(module, "set_processor")
            and not getattr(module, "is_cross_attention", False)]


def _module_spec(name: str, attn: nn.Module, mid_dim: Optional[int] = None) -> dict[str, Any]:
    return {"module_name": name, "dim_n": attn.to_q.in_features, "heads": attn.heads, "projection_mid_dim": mid_dim}


def _index_name(modules_list: list[dict], key: str) -> str:
    """``"3.to_q.weight"`` -> ``"3.to_q.weight (up_blocks.0...attn1)"`` for error messages."""
    index = key.split(".", 1)[0]
    if index.isdigit() and int(index) < len(modules_list):
        return f"{key} ({modules_list[int(index)]['module_name']})"
    return key


class LinFusion(ModelMixin, ConfigMixin):
    """The LinFusion weights of one UNet, one :class:`LinFusionMixer` per ``attn1``, in the official layout.

    ``config.json`` holds ``modules_list``: per module its ``module_name`` in the UNet, ``dim_n``
    (channels), ``heads`` and ``projection_mid_dim`` (None: M = C). ``save_pretrained`` writes the
    official layout (``config.json`` + ``diffusion_pytorch_model.safetensors`` with keys ``{i}.*``).

    Args:
        modules_list: the per-module specs described above.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(self, modules_list: list[dict[str, Any]]):
        super().__init__()
        for index, spec in enumerate(modules_list):
            missing = {"module_name", "dim_n", "heads"} - set(spec)
            if missing:
                raise ValueError(f"modules_list[{index}] lacks {sorted(missing)}: {spec}")
            mixer = LinFusionMixer(spec["dim_n"], spec["heads"], mid_dim=spec.get("projection_mid_dim"))
            self.add_module(str(index), mixer)
        # kept out of nn.Module's registry: the UNet must not become a submodule (state_dict, .to())
        object.__setattr__(self, "_unet", None)
        self._processors: dict[str, LinFusionAttnProcessor] = {}
        self._originals: dict[str, Any] = {}

    @staticmethod
    def default_modules_list(unet: nn.Module, projection_mid_dim: Optional[int] = None,
                             mid_dim_scale: Optional[int] = None) -> list[dict[str, Any]]:
        """One entry per ``attn1`` of ``unet`` (what ``LinFusion.get_default_config`` gives officially).

        ``projection_mid_dim`` sets one MLP width for all; ``mid_dim_scale`` sets M = C / scale per module
        (the official SD-XL training flag ``--mid_dim_scale=16``).
        """
        modules = self_attention_modules(unet)
        if not modules:
            raise ValueError(f"{type(unet).__name__} has no self-attention 'attn1' modules to replace")
        if projection_mid_dim is not None and mid_dim_scale is not None:
            raise ValueError("give projection_mid_dim or mid_dim_scale, not both")
        return [_module_spec(name, attn, attn.to_q.in_features // mid_dim_scale if mid_dim_scale
                             else projection_mid_dim) for name, attn in modules]

    @classmethod
    def construct_for(
            cls,
            pipeline_or_unet: Any,
            pretrained: Union[None, bool, str, os.PathLike, Mapping[str, torch.Tensor]] = None,
            *,
            dtype: Optional[torch.dtype] = None,
            projection_mid_dim: Optional[int] = None,
            mid_dim_scale: Optional[int] = None,
            mount: bool = True,
    ) -> "LinFusion":
        """Build (or load) the LinFusion of a pipeline's UNet and mount it.

        Args:
            pipeline_or_unet: a diffusers pipeline with a ``unet`` (SD, SD-XL, img2img, ControlNet,
                IP-Adapter ...) or the UNet itself.
            pretrained: a checkpoint directory (official layout), a ``.safetensors`` file, a state dict,
                or a hub id; None looks the pipeline's ``name_or_path`` up in :data:`KNOWN_CHECKPOINTS`;
                False builds fresh, randomly initialised modules (for distillation), as the official
                ``load_pretrained=False``.
            dtype: parameter dtype; defaults to the UNet's (fp16 hub weights are cast, so upcast for fp32).
            projection_mid_dim: MLP width of fresh modules (None: C).
            mid_dim_scale: MLP width C / scale per fresh module instead (16 for the SD-XL checkpoint).
            mount: install the processors on the UNet (default).
        """
        unet = getattr(pipeline_or_unet, "unet", pipeline_or_unet)
        if not isinstance(unet, nn.Module):
            raise TypeError(f"expected a diffusers pipeline with a UNet, or a UNet; "
                            f"got {type(pipeline_or_unet).__name__}")
        parameter = next(unet.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        dtype = dtype or (parameter.dtype if parameter is not None else torch.float32)
        if pretrained is None:
            name = (getattr(pipeline_or_unet, "name_or_path", None)
                    or getattr(getattr(unet, "config", None), "_name_or_path", None))
            if name not in KNOWN_CHECKPOINTS:
                raise ValueError(
                    f"no known LinFusion checkpoint for base model {name!r}; pass pretrained=<directory, "
                    f".safetensors file or hub id>, or pretrained=False for fresh modules. Known bases: "
                    + ", ".join(sorted(KNOWN_CHECKPOINTS)))
            pretrained = KNOWN_CHECKPOINTS[name]
        if pretrained is False:
            linfusion = cls(modules_list=cls.default_modules_list(unet, projection_mid_dim, mid_dim_scale))
        elif pretrained is True:
            raise ValueError("pretrained=True is ambiguous: pass a checkpoint, None (look up the base model) or False")
        else:
            linfusion = cls.from_checkpoint(pretrained, unet=unet)
        # nn.Module.to: ModelMixin.to warns about fp32-kept modules on every dtype cast, even with none listed
        nn.Module.to(linfusion, device=device, dtype=dtype)
        if mount:
            linfusion.mount_to(unet)
        return linfusion

    @classmethod
    def from_checkpoint(cls, source: Union[str, os.PathLike, Mapping[str, torch.Tensor]], *,
                        unet: Optional[nn.Module] = None) -> "LinFusion":
        """Load a LinFusion checkpoint (float32 parameters; cast with ``.to``).

        ``source`` is a directory in the official layout (``config.json`` + ``diffusion_pytorch_model.
        safetensors``), a ``.safetensors`` file (vitzoo writes ``modules_list`` into its metadata), a
        ``.pt``/``.bin`` state dict, a state dict, or a hub id (downloaded; needs a network). Keys may
        be the official ``{i}.<param>`` or UNet paths ``<module_name>.<param>`` (with or without
        ``.processor.mixer``). Without a ``modules_list`` the ``unet`` supplies module names and the
        MLP width is read from the weights.
        """
        state, modules_list = _read_checkpoint(source)
        state = _canonical_keys(state, modules_list, unet)
        if modules_list is None:
            if unet is None:
                raise ValueError("a checkpoint without config.json / modules_list metadata needs unet= "
                                 "to name its modules")
            modules_list = _infer_modules_list(state, unet)
        linfusion = cls(modules_list=modules_list)
        expected = {k: tuple(v.shape) for k, v in linfusion.state_dict().items()}
        missing = sorted(set(expected) - set(state), key=_natural)
        unexpected = sorted(set(state) - set(expected), key=_natural)
        wrong = sorted((k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k]), key=_natural)
        if missing or unexpected or wrong:
            lines = [f"missing: {_index_name(modules_list, k)}" for k in missing[:8]]
            lines += [f"unexpected: {k}" for k in unexpected[:8]]
            lines += [f"shape: {_index_name(modules_list, k)} is {tuple(state[k].shape)} in the checkpoint, "
                      f"{expected[k]} for its modules_list entry" for k in wrong[:8]]
            raise ValueError(f"LinFusion checkpoint does not match its modules_list ({len(missing)} missing, "
                             f"{len(unexpected)} unexpected, {len(wrong)} of other shape):\n  " + "\n  ".join(lines))
        linfusion.load_state_dict({k: v.float() for k, v in state.items()})
        return linfusion

    def save_file(self, path: Union[str, os.PathLike]) -> Path:
        """One ``.safetensors`` file with ``modules_list`` in its metadata (loadable without config.json)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(weights, str(path), metadata=self.file_metadata())
        return path

    def file_metadata(self) -> dict[str, str]:
        """safetensors metadata that makes a bare weights file self-describing."""
        return {"format": "pt", "linfusion_modules_list": json.dumps(self.config.modules_list)}

    @property
    def unet(self) -> Optional[nn.Module]:
        """The UNet this LinFusion is mounted on, or None."""
        return self._unet

    def mount_to(self, unet: nn.Module) -> "LinFusion":
        """Install one :class:`LinFusionAttnProcessor` per module on ``unet`` (``set_attn_processor``).

        Raises ``ValueError`` naming every module that does not fit (absent, not self-attention, other
        width or head count), which is what a checkpoint made for another UNet produces.
        """
        if self._unet is not None:
            raise RuntimeError("this LinFusion is already mounted; call unmount() first")
        named = dict(unet.named_modules())
        problems = []
        for index, spec in enumerate(self.config.modules_list):
            name, attn = spec["module_name"], named.get(spec["module_name"])
            if attn is None:
                problems.append(f"{index}: {name} is not in this UNet")
            elif not hasattr(attn, "set_processor") or getattr(attn, "is_cross_attention", False):
                problems.append(f"{index}: {name} is not a self-attention module")
            elif (attn.to_q.in_features, attn.heads) != (spec["dim_n"], spec["heads"]):
                problems.append(f"{index}: {name} has {attn.to_q.in_features} channels and {attn.heads} heads, "
                                f"the checkpoint {spec['dim_n']} and {spec['heads']}")
            elif isinstance(attn.get_processor(), LinFusionAttnProcessor):
                problems.append(f"{index}: {name} already runs LinFusion (unmount the other LinFusion first)")
        if problems:
            shown = "\n  ".join(problems[:12])
            if len(problems) > 12:
                shown += f"\n  ... and {len(problems) - 12} more"
            raise ValueError(f"this LinFusion checkpoint ({len(self.config.modules_list)} modules) does not fit "
                             f"{type(unet).__name__}: {len(problems)} modules do not match; it was made for "
                             f"another UNet architecture:\n  {shown}")
        covered = {spec["module_name"] for spec in self.config.modules_list}
        left = [name for name, _ in self_attention_modules(unet) if name not in covered]
        if left:
            _logger.warning("LinFusion leaves %d self-attention modules of the UNet on their original attention "
                            "(first: %s)", len(left), left[0])
        processors = unet.attn_processors
        self._originals = {f"{spec['module_name']}.processor": processors[f"{spec['module_name']}.processor"]
                           for spec in self.config.modules_list}
        self._processors = {f"{spec['module_name']}.processor": LinFusionAttnProcessor(getattr(self, str(index)))
                            for index, spec in enumerate(self.config.modules_list)}
        unet.set_attn_processor({**processors, **self._processors})
        object.__setattr__(self, "_unet", unet)
        return self

    def unmount(self) -> nn.Module:
        """Give the UNet its original attention processors back; returns the UNet."""
        if self._unet is None:
            raise RuntimeError("this LinFusion is not mounted")
        unet = self._unet
        unet.set_attn_processor({**unet.attn_processors, **self._originals})
        object.__setattr__(self, "_unet", None)
        self._processors, self._originals = {}, {}
        return unet

    @contextlib.contextmanager
    def original_attention(self) -> Iterator[nn.Module]:
        """Within the block the mounted UNet runs its original attention (the distillation teacher)."""
        if self._unet is None:
            raise RuntimeError("this LinFusion is not mounted")
        unet = self._unet
        unet.set_attn_processor({**unet.attn_processors, **self._originals})
        try:
            yield unet
        finally:
            unet.set_attn_processor({**unet.attn_processors, **self._processors})

    def attention_modules(self) -> list[tuple[str, nn.Module]]:
        """``(module_name, attn1 module)`` of the mounted UNet, in checkpoint order (for feature hooks)."""
        if self._unet is None:
            raise RuntimeError("this LinFusion is not mounted")
        named = dict(self._unet.named_modules())
        return [(spec["module_name"], named[spec["module_name"]]) for spec in self.config.modules_list]


def _natural(key: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _read_checkpoint(source: Union[str, os.PathLike, Mapping[str, torch.Tensor]]
                     ) -> tuple[dict[str, torch.Tensor], Optional[list[dict[str, Any]]]]:
    """(state dict, modules_list or None) from any of the accepted sources; files are read by the package's
    one checkpoint reader (:mod:`vitzoo.models._checkpoint`)."""
    if isinstance(source, Mapping):
        return dict(source), None
    path = Path(source)
    if not path.exists():
        if re.fullmatch(r"[\w.-]+/[\w.-]+", str(source)):
            from huggingface_hub import snapshot_download

            from .hub import hub_errors

            with hub_errors(str(source), what="LinFusion checkpoint"):
                path = Path(snapshot_download(str(source), allow_patterns=["config.json", "*.safetensors"]))
        else:
            raise FileNotFoundError(f"LinFusion checkpoint {source} does not exist (expected a directory, a "
                                    ".safetensors/.pt/.bin file or a hub id owner/name)")
    config = None
    if path.is_dir():
        config = path / "config.json"
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            found = sorted(p.name for p in path.glob("*.safetensors"))
            if len(found) != 1:
                raise FileNotFoundError(f"{path} has no {WEIGHTS_NAME} (safetensors files there: {found or 'none'})")
            weights = path / found[0]
        path = weights
    state = select_state_dict(read_checkpoint(path), keys=("state_dict",))
    listed = read_checkpoint_metadata(path).get("linfusion_modules_list")
    modules_list = json.loads(listed) if listed else None
    if config is not None and config.is_file():
        modules_list = json.loads(config.read_text()).get("modules_list", modules_list)
    return state, modules_list


_PARAM = re.compile(r"(to_q|to_k|to_v|to_out|to_q_|to_k_)\..*$")


def _canonical_keys(state: dict[str, torch.Tensor], modules_list: Optional[list[dict]],
                    unet: Optional[nn.Module]) -> dict[str, torch.Tensor]:
    """Map UNet-path keys (``<module_name>[.processor[.mixer]].<param>``) onto the official ``{i}.<param>``."""
    if all(key.split(".", 1)[0].isdigit() for key in state):
        return state
    names = ([spec["module_name"] for spec in modules_list] if modules_list is not None
             else [name for name, _ in self_attention_modules(unet)] if unet is not None else None)
    if names is None:
        raise ValueError("a checkpoint keyed by UNet module paths needs unet= (or a modules_list) to be indexed")
    index = {name: i for i, name in enumerate(names)}
    out = {}
    for key, value in state.items():
        match = _PARAM.search(key)
        prefix = key[:match.start()].rstrip(".") if match else ""
        prefix = re.sub(r"(\.processor)?(\.mixer)?$", "", prefix)
        if not match or prefix not in index:
            raise ValueError(f"checkpoint key {key!r} names no self-attention module of this UNet "
                             f"(expected '<i>.<param>' or '<attn1 path>.<param>', e.g. '{names[0]}.to_q.weight')")
        out[f"{index[prefix]}.{match.group(0)}"] = value
    return out


def _infer_modules_list(state: dict[str, torch.Tensor], unet: nn.Module) -> list[dict[str, Any]]:
    """modules_list of a bare official state dict: names from the UNet, MLP width from the weights."""
    modules = self_attention_modules(unet)
    indices = sorted({int(key.split(".", 1)[0]) for key in state})
    if indices != list(range(len(modules))):
        raise ValueError(f"the checkpoint holds {len(indices)} LinFusion modules "
                         f"(indices {indices[0]}..{indices[-1]}), {type(unet).__name__} has {len(modules)} self-attention modules: "
                         "it was made for another UNet")
    specs = []
    for i, (name, attn) in enumerate(modules):
        mid = state.get(f"{i}.to_q_.0.weight")
        mid_dim = -1 if mid is None else (None if mid.shape[0] == attn.to_q.in_features else int(mid.shape[0]))
        specs.append(_module_spec(name, attn, mid_dim))
    return specs


SD_UNET_CONFIGS: dict[str, dict[str, Any]] = {
    # diffusers' UNet2DConditionModel defaults are the SD-1.x layout; only what differs is listed.
    "sd15": dict(sample_size=64, cross_attention_dim=768),
    "sd21": dict(sample_size=96, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                 use_linear_projection=True, upcast_attention=True),
    "sdxl": dict(sample_size=128, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 block_out_channels=(320, 640, 1280), transformer_layers_per_block=(1, 2, 10),
                 attention_head_dim=(5, 10, 20), cross_attention_dim=2048, use_linear_projection=True,
                 addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816),
}


def stable_diffusion_unet(arch: str = "sd15", **overrides: Any) -> nn.Module:
    """A randomly initialised UNet with the architecture of SD-1.5 (``"sd15"``), SD-2.1 or SD-XL
    (built from the config in code, no download; use ``with torch.device("meta"):`` for layout checks)."""
    from diffusers import UNet2DConditionModel

    if arch not in SD_UNET_CONFIGS:
        raise ValueError(f"unknown Stable Diffusion architecture {arch!r}; expected one of {sorted(SD_UNET_CONFIGS)}")
    return UNet2DConditionModel(**{**SD_UNET_CONFIGS[arch], **overrides})
