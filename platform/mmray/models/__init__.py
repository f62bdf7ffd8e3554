"""Encoders, projection heads and the composed dual-encoder model."""
