"""Data in: retrieval data (BEIR folders, ``datasets`` sources), training pairs and dev splits, the demo catalogue."""
