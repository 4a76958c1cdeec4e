"""How to use a model in each retrieval tool: the one source of the README's and the card's "Use it in your stack".

Each snippet loads the model, embeds ``queries`` and ``documents`` the tool's own way, and leaves
``query_vectors`` and ``document_vectors``; ``tests/test_clients.py`` runs exactly the text ``render`` returns and
compares those with ``encode_query`` / ``encode_document``. The README and every model card print the same text, so
what users copy is what the tests ran.

``render(model_id, trust_remote_code)``: ``True`` for the custom format (the head's code is in the repo), ``False`` for
the stock format (``modeling.model.stock``), which loads without it.
"""

from __future__ import annotations

from dataclasses import dataclass

PLACEHOLDER = "MODEL_ID"
# A model card's section sits between these (so a converted card can swap it for the stock-format one).
STACK_START = "<!-- frozen-head:stack:start -->"
STACK_END = "<!-- frozen-head:stack:end -->"
# The two forms the snippets use for the flag; both disappear for a stock-format model.
_TRUST_INLINE = ", trust_remote_code=True"
_TRUST_LINE = "trust_remote_code"


@dataclass(frozen=True)
class Snippet:
    key: str
    title: str
    install: str
    note: str
    code: str

    def render(self, model_id: str, trust_remote_code: bool = True) -> str:
        code = self.code.replace(PLACEHOLDER, model_id)
        if not trust_remote_code:
            code = code.replace(_TRUST_INLINE, "")
            code = "\n".join(line for line in code.splitlines() if _TRUST_LINE not in line) + "\n"
        return code


_TEXTS = """queries = ["kicks for jogging in navy for her"]
documents = ["Kestrel blue running shoes for women.", "A ceramic coffee mug, 350 ml."]
"""

SNIPPETS = (
    Snippet(
        "sentence-transformers",
        "Sentence Transformers",
        "pip install sentence-transformers",
        "`encode_query` goes through the head, `encode_document` does not (query placement). Plain `encode` takes "
        'the document route; `encode(texts, task="query")` equals `encode_query`.',
        f"""from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{PLACEHOLDER}", trust_remote_code=True)
{_TEXTS}query_vectors = model.encode_query(queries)
document_vectors = model.encode_document(documents)
print(model.similarity(query_vectors, document_vectors))
""",
    ),
    Snippet(
        "langchain",
        "LangChain (langchain-huggingface)",
        "pip install langchain-huggingface",
        "`query_encode_kwargs` routes `embed_query` through the head (without it LangChain calls plain `encode` and "
        "skips the head). It is ignored with `multi_process=True`.",
        f"""from langchain_huggingface import HuggingFaceEmbeddings

embeddings = HuggingFaceEmbeddings(
    model_name="{PLACEHOLDER}",
    model_kwargs={{"trust_remote_code": True}},
    query_encode_kwargs={{"task": "query"}},
    encode_kwargs={{"task": "document"}},
)
{_TEXTS}query_vectors = [embeddings.embed_query(query) for query in queries]
document_vectors = embeddings.embed_documents(documents)
""",
    ),
    Snippet(
        "llama-index",
        "LlamaIndex",
        "pip install llama-index-embeddings-huggingface frozen-head",
        "`HuggingFaceEmbedding` has no setting to route queries, so this package ships a drop-in subclass "
        "(`modeling/integrations/llama_index.py`, 50 lines: copy it if you prefer). On a symmetric model or a bare "
        "encoder it gives what `encode` gives.",
        f"""from modeling.integrations.llama_index import FrozenHeadEmbedding

embed_model = FrozenHeadEmbedding(model_name="{PLACEHOLDER}", trust_remote_code=True)
{_TEXTS}query_vectors = [embed_model.get_query_embedding(query) for query in queries]
document_vectors = embed_model.get_text_embedding_batch(documents)
""",
    ),
    Snippet(
        "haystack",
        "Haystack (sentence-transformers-haystack)",
        "pip install haystack-ai sentence-transformers-haystack",
        '`encode_kwargs={"task": "query"}` on the text embedder routes queries through the head (it survives '
        "`Pipeline.dumps`/`loads`).",
        f"""from haystack import Document
from haystack_integrations.components.embedders.sentence_transformers import (
    SentenceTransformersDocumentEmbedder,
    SentenceTransformersTextEmbedder,
)

text_embedder = SentenceTransformersTextEmbedder(
    model="{PLACEHOLDER}",
    trust_remote_code=True,
    encode_kwargs={{"task": "query"}},
)
document_embedder = SentenceTransformersDocumentEmbedder(
    model="{PLACEHOLDER}",
    trust_remote_code=True,
    encode_kwargs={{"task": "document"}},
)
text_embedder.warm_up()
document_embedder.warm_up()
{_TEXTS}query_vectors = [text_embedder.run(text=query)["embedding"] for query in queries]
embedded = document_embedder.run(documents=[Document(content=text) for text in documents])["documents"]
document_vectors = [document.embedding for document in embedded]
""",
    ),
    Snippet(
        "chroma",
        "Chroma",
        "pip install chromadb frozen-head",
        "Chroma's `SentenceTransformerEmbeddingFunction` has no setting to route queries; this package's subclass "
        "does, and is registered with Chroma: import it before reopening a persistent collection made with it. On a "
        "symmetric model or a bare encoder it gives what `encode` gives.",
        f"""import chromadb
from modeling.integrations.chroma import FrozenHeadEmbeddingFunction

embedding_function = FrozenHeadEmbeddingFunction(model_name="{PLACEHOLDER}", trust_remote_code=True)
client = chromadb.EphemeralClient()  # or chromadb.PersistentClient(path="...")
collection = client.get_or_create_collection("products", embedding_function=embedding_function)
{_TEXTS}collection.add(ids=[str(i) for i in range(len(documents))], documents=documents)
hits = collection.query(query_texts=queries, n_results=2)
query_vectors = embedding_function.embed_query(queries)
document_vectors = embedding_function(documents)
""",
    ),
    Snippet(
        "mteb",
        "MTEB",
        "pip install mteb",
        "Retrieval tasks call `encode_query` and `encode_document`: nothing to set. Other task types call plain "
        "`encode` (the document route).",
        f"""import mteb
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{PLACEHOLDER}", trust_remote_code=True)
results = mteb.evaluate(model, tasks=mteb.get_tasks(tasks=["SciFact"]))
""",
    ),
)
BY_KEY = {snippet.key: snippet for snippet in SNIPPETS}


def section(model_id: str = "org/name", trust_remote_code: bool = True, heading: str = "##") -> str:
    """The "Use it in your stack" section: every snippet, rendered for ``model_id``."""
    lines = [
        f"{heading} Use it in your stack",
        "",
        (
            "A query-only model helps only where queries go through `encode_query`; most tools call plain `encode` "
            "unless told otherwise. Each snippet below is run by the tests (queries compared with `encode_query`, "
            "documents with `encode_document`)."
        ),
        "",
    ]
    for snippet in SNIPPETS:
        lines += [
            f"{heading}# {snippet.title}",
            "",
            f"`{snippet.install}`. {snippet.note}",
            "",
            "```python",
            snippet.render(model_id, trust_remote_code).rstrip("\n"),
            "```",
            "",
        ]
    return "\n".join(lines).rstrip("\n") + "\n"
