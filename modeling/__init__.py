"""frozen-head: a small projection head trained on a frozen sentence-transformers encoder.

Public API (everything else is importable but may move):

- ``build_model``, ``load_encoder``, ``save_model``, ``find_head``, ``placement_of``, ``ModelLayout``: the model;
- ``ProjectionHead``: the head module that ships inside every saved model;
- ``EmbeddingCache``: the frozen encoder's embeddings on disk;
- ``load_ir_data``: retrieval data (BEIR folder or ``datasets`` source), validated.

Training and evaluation run through ``train.py`` / ``evaluate.py`` (or ``frozen-head-train`` /
``frozen-head-evaluate``); ARCHITECTURE.md says which file does what.
"""

__version__ = "0.2.0"

from modeling.cache.embedding_cache import EmbeddingCache
from modeling.data.ir_data import load_ir_data
from modeling.model.build import (
    DEFAULT_ENCODER_NAME,
    build_model,
    default_encoder_path,
    find_head,
    load_encoder,
    placement_of,
    save_model,
)
from modeling.model.layout import ModelLayout, freeze
from modeling.model.projection_head import ProjectionHead

__all__ = [
    "DEFAULT_ENCODER_NAME",
    "EmbeddingCache",
    "ModelLayout",
    "ProjectionHead",
    "__version__",
    "build_model",
    "default_encoder_path",
    "find_head",
    "freeze",
    "load_encoder",
    "load_ir_data",
    "placement_of",
    "save_model",
]
