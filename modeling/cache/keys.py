"""Identities in the embedding cache: one key per (prompt, text), one fingerprint per encoder prefix.

The text key hashes the prompt's length before the prompt, so no prompt/text split can collide (NUL and any
other character are plain data). The fingerprint covers everything that changes the pre-head embedding:
module types and configs, weights and their dtype, the tokenizer's full serialisation (normaliser, e.g.
lowercasing, pre-tokeniser, vocabulary), its init settings, max_seq_length and the model's prompts.
"""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

KEY_BYTES = 16
KEY_DTYPE = np.dtype(f"S{KEY_BYTES}")  # fixed-size bytes: sortable, searchable with np.searchsorted
FORMAT_VERSION = "v2"  # folder of this layout; the v1 safetensors caches beside it are left untouched


def text_key(text: str, prompt: str | None = None) -> bytes:
    """16-byte key of ``text`` under ``prompt``: blake2b(len(prompt) | prompt | text)."""
    prompt_bytes = (prompt or "").encode("utf-8")
    digest = hashlib.blake2b(digest_size=KEY_BYTES)
    digest.update(struct.pack("<Q", len(prompt_bytes)))
    digest.update(prompt_bytes)
    digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.digest()


def text_keys(texts, prompt: str | None = None) -> np.ndarray:
    """Keys of ``texts`` as a ``KEY_DTYPE`` array."""
    return np.array([text_key(text, prompt) for text in texts], dtype=KEY_DTYPE)


# Settings that change how a text is split (a saved copy adds runtime ones such as max_length: not identity).
_TEXT_SETTINGS = ("do_lower_case", "strip_accents", "tokenize_chinese_chars", "add_prefix_space", "trim_offsets")


def _tokenizer_identity(tokenizer) -> str:
    parts = [type(tokenizer).__name__]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # normaliser (lowercase, accents), pre-tokeniser, model, post-processor; not the runtime
        # truncation/padding state, which the last call left there (max_seq_length is hashed on its own)
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        parts.append(json.dumps(state, sort_keys=True))
    else:
        parts.append(json.dumps(sorted(tokenizer.get_vocab().items())))
    init = {k: v for k, v in getattr(tokenizer, "init_kwargs", {}).items() if k in _TEXT_SETTINGS}
    parts.append(json.dumps(init, sort_keys=True, default=str))
    parts.append(f"truncation_side={getattr(tokenizer, 'truncation_side', None)}")
    return "\n".join(parts)


def encoder_fingerprint(prefix: SentenceTransformer, extra: str = "") -> str:
    """Identity of the modules that produce the pre-head embedding (see module docstring)."""
    digest = hashlib.blake2b(digest_size=16)

    def add(text: str) -> None:
        digest.update(struct.pack("<Q", len(text.encode())))
        digest.update(text.encode())

    for module in prefix:
        config = module.get_config_dict() if hasattr(module, "get_config_dict") else {}
        add(f"{type(module).__module__}.{type(module).__name__}:{json.dumps(config, sort_keys=True, default=str)}")
        tokenizer = getattr(module, "tokenizer", None)
        if tokenizer is not None:
            add(_tokenizer_identity(tokenizer))
    add(f"max_seq_length={prefix.max_seq_length}")
    add(json.dumps({"prompts": prefix.prompts, "default": prefix.default_prompt_name}, sort_keys=True))
    add(extra)
    for name, tensor in sorted(prefix.state_dict().items()):
        add(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}")
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:24]
