"""Building blocks other than mixers (patch embeds, MLPs, positional encodings, local convs).

timm.layers is used wherever it already has the piece; what lives here is what it lacks.
"""

from .conv import DepthwiseConv2d, GroupedPointwiseConv1d
from .fuse import FusedLinear, fold_batchnorm, fold_batchnorm_sequence, fuse_linear, fuse_linears, merge_linears
from .init import trunc_normal_init
from .lightnet_pe import MdLrpeCosine, MdTpe, Tpe, md_lrpe_cosine
from .local import ConvPosEnc, LocalConcentration
from .shape import map_to_tokens, pad_to_multiple, resize_pos_embed, tokens_to_map

__all__ = [
    "ConvPosEnc",
    "FusedLinear",
    "DepthwiseConv2d",
    "GroupedPointwiseConv1d",
    "LocalConcentration",
    "MdLrpeCosine",
    "MdTpe",
    "Tpe",
    "fold_batchnorm",
    "map_to_tokens",
    "fold_batchnorm_sequence",
    "fuse_linear",
    "fuse_linears",
    "md_lrpe_cosine",
    "merge_linears",
    "pad_to_multiple",
    "resize_pos_embed",
    "tokens_to_map",
    "trunc_normal_init",
]
