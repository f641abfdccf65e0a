"""Backbone families, one module each; importing this package registers every model with timm."""

from .._discovery import import_submodules
from ._builder import PretrainedWeightsError, build_vitzoo_model, make_cfg
from ._checkpoint import CheckpointError, read_checkpoint, select_state_dict, unwrap_state_dict
from ._facts import PaperFacts, paper_facts
from ._registry import check_model_name, list_models, model_family, reduced_config, register_model
from .optimize import fuse, optimize

import_submodules(__name__, __path__)

__all__ = [
    "CheckpointError",
    "PaperFacts",
    "PretrainedWeightsError",
    "build_vitzoo_model",
    "check_model_name",
    "fuse",
    "list_models",
    "make_cfg",
    "model_family",
    "optimize",
    "paper_facts",
    "read_checkpoint",
    "reduced_config",
    "register_model",
    "select_state_dict",
    "unwrap_state_dict",
]
