"""fp16 storage effect on SciFact test (bare all-MiniLM-L6-v2): nDCG@10 from fp32 rows vs the same rows rounded to fp16.

    python benchmarks/cache_fp16_ndcg.py [--v1-cache ~/.cache/frozen-head/embeddings/adb01e2dbd6f34818f41]

Reads the rows from the v1 (safetensors) SciFact cache that the shared machine already holds, so nothing is
encoded; the rounding is exactly what ``EmbeddingCache(storage="float16")`` stores.
"""

import argparse
import glob
import hashlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from safetensors.torch import load_file

from modeling.data.ir_data import load_beir_folder
from modeling.evaluation.metrics import mean_metrics, per_query_metrics

parser = argparse.ArgumentParser()
parser.add_argument("--v1-cache", default="~/.cache/frozen-head/embeddings/adb01e2dbd6f34818f41")
parser.add_argument("--data", default="/work/shared/data/scifact")
args = parser.parse_args()
rows = {}
for path in glob.glob(os.path.join(os.path.expanduser(args.v1_cache), "*.safetensors")):
    t = load_file(path)
    for key, row in zip(t["keys"], t["embeddings"]):
        rows[bytes(key.tolist())] = row
data = load_beir_folder(args.data, "test")
key = lambda text: hashlib.sha256(f"\x00{text}".encode()).digest()
doc_ids = list(data.corpus)
qids = list(data.qrels)
D = torch.stack([rows[key(data.corpus[d])] for d in doc_ids])
Q = torch.stack([rows[key(data.queries[q])] for q in qids])
for name, cast in [("float32", lambda x: x), ("float16", lambda x: x.half().float())]:
    d = torch.nn.functional.normalize(cast(D), dim=-1)
    q = torch.nn.functional.normalize(cast(Q), dim=-1)
    scores = q @ d.T
    top = scores.topk(100, dim=1)
    run = {qid: {doc_ids[j]: float(s) for s, j in zip(top.values[i], top.indices[i])} for i, qid in enumerate(qids)}
    m = mean_metrics(per_query_metrics(data.qrels, run))
    print(name, {k: round(v, 5) for k, v in m.items()})
print("max |fp16-fp32| per element", (D.half().float() - D).abs().max().item(), "rows", len(D))
