"""Projection heads on frozen sentence-transformers encoders: build, save, load anywhere."""

from modeling.build import (
    DEFAULT_ENCODER_NAME,
    build_model,
    default_encoder_path,
    find_head,
    freeze,
    load_encoder,
    placement_of,
    save_model,
)
from modeling.projection_head import ProjectionHead

__all__ = [
    "DEFAULT_ENCODER_NAME",
    "ProjectionHead",
    "build_model",
    "default_encoder_path",
    "find_head",
    "freeze",
    "load_encoder",
    "placement_of",
    "save_model",
]
