"""Building blocks other than mixers (patch embeds, MLPs, positional encodings, local convs).

timm.layers is used wherever it already has the piece; what lives here is what it lacks.
"""

from .drop import drop_path_rates

__all__ = ["drop_path_rates"]
