"""Test nDCG@10 of a query-only model under the ways a client can call it (from the cached pre-head embeddings).

    python benchmarks/encode_routes.py MODEL_DIR ../shared/data/scifact

Why: plain ``encode()`` takes the Router's default route; this measures what each choice of that route gives.
"""

import sys

from sentence_transformers import SentenceTransformer

from modeling.cache.cached_input import cached_twin, prefix_model
from modeling.cache.embedding_cache import EmbeddingCache
from modeling.data.ir_data import load_beir_folder
from modeling.evaluation.metrics import mean_metrics, per_query_metrics

model = SentenceTransformer(sys.argv[1], trust_remote_code=True)
data = load_beir_folder(sys.argv[2], split="test")
cache = EmbeddingCache(prefix_model(model), show_progress_bar=False)
twin = cached_twin(model, cache)
qids, qtexts = list(data.queries), list(data.queries.values())
dids, dtexts = list(data.corpus), list(data.corpus.values())
cache.ensure(qtexts)
cache.ensure(dtexts)
enc = lambda texts, task: twin.encode(texts, task=task, convert_to_tensor=True, batch_size=256)
Q = {"base": enc(qtexts, "document"), "head": enc(qtexts, "query")}
D = {"base": enc(dtexts, "document"), "head": enc(dtexts, "query")}
for name, q, d in [
    ("bare encoder both sides (plain encode() today)", "base", "base"),
    ("head on queries, base documents (encode_query/encode_document)", "head", "base"),
    ("head on both sides (what encode() would give with default route = query)", "head", "head"),
    ("base queries vs head documents", "base", "head"),
]:
    scores = Q[q] @ D[d].T
    top = scores.topk(100, dim=1)
    run = {qid: {dids[j]: float(s) for s, j in zip(top.values[i], top.indices[i])} for i, qid in enumerate(qids)}
    m = mean_metrics(per_query_metrics(data.qrels, run))
    print(f"| {name} | {m['nDCG@10']:.4f} |")
print("encoder calls:", cache.encoded_texts)
