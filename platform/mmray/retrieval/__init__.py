"""Matching and retrieval: Ray Data batch embedding, faiss indexes, search and evaluation through them."""
