"""Nearest-neighbour indexes over embeddings (faiss)."""
