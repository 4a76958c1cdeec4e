"""The embedded demo dataset: a small product catalogue with shopper queries and graded judgments.

Written by this project (no download, nothing fetched), deterministic, in the BEIR layout
(corpus.jsonl, queries.jsonl, qrels/{train,dev,test}.tsv), so ``python train.py`` with no arguments
runs offline in minutes. Queries use shoppers' words ("kicks", "shades", "navy", "for the little
ones") while the catalogue uses the trade's ("running shoes", "sunglasses", "blue", "kids"): the gap
a bare encoder bridges only in part and a trained head learns to close.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from modeling.cache.embedding_cache import PROJECT_HOME

VERSION = 3
CATEGORIES = {
    "running shoes": ["kicks for jogging", "trainers", "jogging sneakers"],
    "t-shirt": ["tee", "short sleeve top"],
    "hoodie": ["hooded sweatshirt", "pullover with a hood"],
    "backpack": ["rucksack", "daypack", "school bag"],
    "water bottle": ["flask", "canteen", "hydration bottle"],
    "headphones": ["cans", "over-ear earphones"],
    "desk lamp": ["reading light", "table light"],
    "office chair": ["desk seat", "swivel chair"],
    "coffee mug": ["cuppa cup", "tea mug"],
    "phone case": ["mobile cover", "cell phone shell"],
    "laptop sleeve": ["notebook pouch", "computer cover"],
    "rain jacket": ["waterproof shell", "anorak", "raincoat"],
    "yoga mat": ["exercise pad", "workout mat"],
    "wool socks": ["warm hosiery", "thick socks"],
    "sunglasses": ["shades", "sunnies"],
    "wristwatch": ["timepiece", "watch for the wrist"],
}
COLOURS = {
    "red": ["crimson", "scarlet"],
    "blue": ["navy", "cobalt"],
    "black": ["jet", "ebony"],
    "green": ["olive", "forest"],
    "white": ["ivory", "snow"],
    "grey": ["charcoal", "slate"],
}
AUDIENCES = {
    "men": ["for him", "for a guy"],
    "women": ["for her", "for a lady"],
    "kids": ["for the little ones", "for children"],
}
BRANDS = ["Northwind", "Kestrel", "Tundra", "Solace", "Acme"]
FEATURES = [
    "Lightweight and durable for everyday use.",
    "Made from recycled materials.",
    "Comes with a two-year warranty.",
    "A bestseller this season.",
    "Designed for comfort on long days.",
    "Easy to clean and quick to dry.",
]


def _catalogue(rng: random.Random) -> list[dict]:
    items = []
    for category in CATEGORIES:
        for colour in COLOURS:
            for brand in rng.sample(BRANDS, 3):
                audience = rng.choice(list(AUDIENCES))
                items.append(
                    {
                        "_id": f"item-{len(items):04d}",
                        "title": f"{brand} {colour} {category}",
                        "text": f"{brand} {colour} {category} for {audience}. {rng.choice(FEATURES)}",
                        "category": category,
                        "colour": colour,
                        "audience": audience,
                        "brand": brand,
                    }
                )
    return items


def _queries(items: list[dict], rng: random.Random, count: int) -> tuple[list[dict], list[tuple[str, str, int]]]:
    """Queries with their split: a training query never uses a phrase's last wording, which only dev and test do,
    so evaluation also asks for phrasings the head never saw."""
    queries: dict[str, dict] = {}
    qrels: list[tuple[str, str, int]] = []
    attempts = 0
    while len(queries) < count and attempts < 50 * count:
        attempts += 1
        item = rng.choice(items)
        split = rng.choices(("train", "dev", "test"), weights=(7, 1, 2))[0]
        pick = (lambda words: rng.choice(words[:-1])) if split == "train" else rng.choice
        with_brand = rng.random() < 0.3
        asked = {"category"} | {key for key in ("colour", "audience") if rng.random() < 0.7}
        parts = [pick(CATEGORIES[item["category"]])]
        if "colour" in asked:
            parts += ["in", pick(COLOURS[item["colour"]])]
        if "audience" in asked:
            parts.append(pick(AUDIENCES[item["audience"]]))
        if with_brand:
            parts = [item["brand"], *parts]
        text = " ".join(parts)
        if text in {q["text"] for q in queries.values()}:
            continue
        qid = f"q-{len(queries):04d}"
        queries[qid] = {"_id": qid, "text": text, "split": split}
        for other in items:
            same = all(other[key] == item[key] for key in asked)
            if same and (not with_brand or other["brand"] == item["brand"]):
                qrels.append((qid, other["_id"], 2 if len(asked) == 3 else 1))
    return list(queries.values()), qrels


def write_demo_dataset(folder: str | Path, seed: int = 13) -> Path:
    """Write the demo catalogue as a BEIR folder; queries are split about 70/10/20 into train/dev/test."""
    folder = Path(folder)
    rng = random.Random(seed)
    items = _catalogue(rng)
    queries, qrels = _queries(items, rng, count=1000)
    split_of = {query["_id"]: query.pop("split") for query in queries}
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as out:
        for item in items:
            out.write(json.dumps({"_id": item["_id"], "title": item["title"], "text": item["text"]}) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as out:
        for query in queries:
            out.write(json.dumps(query) + "\n")
    for split in ("train", "dev", "test"):
        with open(folder / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as out:
            out.write("query-id\tcorpus-id\tscore\n")
            for qid, doc_id, score in qrels:
                if split_of[qid] == split:
                    out.write(f"{qid}\t{doc_id}\t{score}\n")
    (folder / "README.md").write_text(
        "# frozen-head demo catalogue\n\nA synthetic product catalogue written by `modeling/demo_data.py` "
        f"(version {VERSION}, seed {seed}): {len(items)} items, {len(queries)} shopper queries, graded judgments "
        "(an item matching every attribute the query names is relevant: grade 2 when the query names category, "
        "colour and audience, else 1).\n"
    )
    return folder


def demo_dataset_path(root: str | Path | None = None) -> Path:
    """The demo dataset's folder, written on first use under the project's cache."""
    folder = Path(root or PROJECT_HOME / "demo") / f"catalogue-v{VERSION}"
    if not (folder / "qrels" / "test.tsv").is_file():
        write_demo_dataset(folder)
    return folder
