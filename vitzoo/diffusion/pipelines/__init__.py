"""diffusers pipelines of vitzoo, one ``pipeline_<task>.py`` each.

Keep class module paths stable: diffusers writes them into ``model_index.json`` on save.
"""

from .pipeline_high_resolution import HighResolutionPipeline, HighResolutionPipelineOutput, stage_sizes, stage_strengths
from .pipeline_high_resolution_sdxl import HighResolutionXLPipeline, xl_stage_sizes
from .pipeline_lit import LiTPipeline, LiTPipelineOutput, classifier_free_guidance, ddpm_scheduler
from .pipeline_super_resolution_sdxl import SuperResolutionXLPipeline

__all__ = [
    "HighResolutionPipeline",
    "HighResolutionPipelineOutput",
    "HighResolutionXLPipeline",
    "LiTPipeline",
    "LiTPipelineOutput",
    "SuperResolutionXLPipeline",
    "classifier_free_guidance",
    "ddpm_scheduler",
    "stage_sizes",
    "stage_strengths",
    "xl_stage_sizes",
]
