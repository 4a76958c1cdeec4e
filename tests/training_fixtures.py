"""Small training inputs written by the tests themselves, and the helpers the training tests share."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.tiny_encoder import tiny_encoder

COLOURS = ["red", "blue", "green", "black", "white"]
THINGS = ["shoe", "boot", "lamp", "desk", "chair", "mug", "bottle", "bag", "cable", "phone"]
MATERIALS = ["leather", "wooden", "metal", "cotton", "wool"]


def pair_rows(count: int = 120, seed: int = 0) -> list[dict]:
    """(query, positive) rows whose positive shares the query's words, so even a tiny encoder can learn them."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < count:
        colour, thing, material = rng.choice(COLOURS), rng.choice(THINGS), rng.choice(MATERIALS)
        query = f"{colour} {thing} {rng.randint(0, 99)}"
        if query in seen:
            continue
        seen.add(query)
        rows.append({"query": query, "positive": f"a {material} {thing} in {colour} {query.split()[-1]}"})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_beir(folder: Path, rows: list[dict], dev_share: float = 0.2) -> Path:
    """A BEIR folder from (query, positive) rows: train and dev qrels split by query."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    docs = {row["positive"]: f"d{i}" for i, row in enumerate(rows)}
    write_jsonl(folder / "corpus.jsonl", [{"_id": i, "title": "", "text": t} for t, i in docs.items()])
    write_jsonl(folder / "queries.jsonl", [{"_id": f"q{i}", "text": row["query"]} for i, row in enumerate(rows)])
    cut = int(len(rows) * (1 - dev_share))
    for split, part in (("train", range(cut)), ("dev", range(cut, len(rows)))):
        lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\t{docs[rows[i]['positive']]}\t1" for i in part]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def save_tiny_encoder(folder: Path) -> Path:
    """The tiny random encoder saved as a sentence-transformers folder, to pass as ``--encoder``."""
    model = tiny_encoder(folder.parent / f"{folder.name}-bert")
    model.save_pretrained(str(folder))
    return folder


def run_train(encoder_dir, data, output, cache, *extra) -> int:
    """train.py's main in this process, quiet, on the tiny encoder and a private cache."""
    from modeling.cli import train

    args = ["--encoder", str(encoder_dir), "--data", str(data), "--output-dir", str(output), "--cache-dir", str(cache)]
    return train.main([*args, "--quiet", *extra])


def train_small_run(folder: Path, *extra) -> Path:
    """A short run (2 epochs, lr 3e-3, no decay) on 160 pairs with the tiny encoder; returns its model folder."""
    encoder = save_tiny_encoder(folder / "encoder")
    data = write_jsonl(folder / "pairs.jsonl", pair_rows(160))
    code = run_train(encoder, data, folder / "out", folder / "cache", "--epochs", "2", "--learning-rate", "3e-3",
                     "--weight-decay", "0", *extra)  # fmt: skip
    assert code == 0
    return folder / "out"


def state_hash(module) -> str:
    """A digest of a module's weights, bit for bit."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode() + tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_hash(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def wait_for(predicate, timeout: float) -> bool:
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False
