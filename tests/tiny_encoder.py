"""A tiny random BERT encoder built in-process, so fast tests never download anything."""

from __future__ import annotations

import string
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.base.modules.normalize import Normalize
from sentence_transformers.sentence_transformer.modules import Pooling
from transformers import BertConfig, BertModel, BertTokenizerFast

WORDS = (
    "the a of and to in is for on with cat cats dog dogs red blue green shoe shoes boot boots lamp desk chair "
    "table phone case cable charger laptop bag coffee tea mug cup water bottle light dark small large cheap "
    "warm cold running walking wooden metal leather cotton wool kitchen garden office travel sport kids bottle bag"
).split()


EXTRA = [f"##{c}" for c in string.ascii_lowercase + string.digits] + [str(n) for n in range(100)]


def write_tiny_bert(folder: str | Path, hidden: int = 32, seed: int = 0, dropout: float = 0.1) -> Path:
    """Save a 2-layer random BERT plus a word-level tokenizer to ``folder``; returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.ascii_lowercase, *string.digits, *WORDS, *EXTRA]
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(dict.fromkeys(vocab))}, do_lower_case=True)
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    BertModel(config).save_pretrained(str(folder))
    return folder


def tiny_encoder(folder: str | Path, hidden: int = 32, seed: int = 0) -> SentenceTransformer:
    """``[Transformer, Pooling(mean), Normalize]`` on a tiny random BERT, like all-MiniLM-L6-v2 in shape."""
    path = write_tiny_bert(folder, hidden=hidden, seed=seed)
    transformer = Transformer(str(path), max_seq_length=32)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    return SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")
