"""Matching and retrieval: Ray Data batch embedding, search and evaluation through indexes."""
