"""Numerics shared by the mixers. Each op has a naive reference and a fast form with one signature.

``set_backend("naive")`` (or ``VITZOO_OPS=naive``) routes every fast op to its reference.
"""

from ._backend import get_backend, set_backend
from .additive_recurrence import (
    additive_recurrence,
    additive_recurrence_naive,
    additive_recurrence_state,
    additive_recurrence_state_naive,
    lightnet_attention,
    lightnet_attention_naive,
)
from .decay_recurrence import decay_recurrence, decay_recurrence_naive
from .feature_maps import FEATURE_MAPS, get_feature_map
from .linear_attention import (
    injective_linear_attention,
    injective_linear_attention_naive,
    linear_attention,
    linear_attention_naive,
    linear_attention_terms,
    linear_attention_terms_naive,
)
from .rope import rope_2d, rope_2d_frequencies, rope_2d_naive, rope_2d_tables
from .softmax_attention import softmax_attention, softmax_attention_naive
from .window_attention import (
    relative_position_index,
    shifted_window_mask,
    window_attention,
    window_attention_naive,
    window_partition,
    window_reverse,
)

__all__ = [
    "FEATURE_MAPS",
    "additive_recurrence",
    "additive_recurrence_naive",
    "additive_recurrence_state",
    "additive_recurrence_state_naive",
    "decay_recurrence",
    "decay_recurrence_naive",
    "get_backend",
    "get_feature_map",
    "lightnet_attention",
    "injective_linear_attention",
    "injective_linear_attention_naive",
    "lightnet_attention_naive",
    "linear_attention",
    "linear_attention_naive",
    "linear_attention_terms",
    "linear_attention_terms_naive",
    "relative_position_index",
    "rope_2d",
    "rope_2d_frequencies",
    "rope_2d_naive",
    "rope_2d_tables",
    "set_backend",
    "shifted_window_mask",
    "softmax_attention",
    "softmax_attention_naive",
    "window_attention",
    "window_attention_naive",
    "window_partition",
    "window_reverse",
]
