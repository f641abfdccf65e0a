"""Building blocks other than mixers (patch embeds, MLPs, positional encodings, local convs).

timm.layers is used wherever it already has the piece; what lives here is what it lacks.
"""

from .conv import DepthwiseConv2d
from .init import trunc_normal_init
from .local import ConvPosEnc, LocalConcentration

__all__ = ["ConvPosEnc", "DepthwiseConv2d", "LocalConcentration", "trunc_normal_init"]
