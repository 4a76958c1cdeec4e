"""Use a frozen-head model in retrieval tools that call plain ``encode`` for queries and documents alike.

A query-only model only helps when queries go through ``encode_query``. Tools with a setting for that need no
code here (the snippets in ``snippets.py`` show the setting); for the two without one, a small adapter:

- ``modeling.integrations.llama_index.FrozenHeadEmbedding`` (LlamaIndex ``HuggingFaceEmbedding``);
- ``modeling.integrations.chroma.FrozenHeadEmbeddingFunction`` (Chroma ``SentenceTransformerEmbeddingFunction``).

Each module imports its tool, so import it only where the tool is installed (``pip install frozen-head[integrations]``).
"""
