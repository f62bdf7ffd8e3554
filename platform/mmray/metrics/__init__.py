"""Metrics: Recall@K and median rank, prediction heads' metrics, caption scores, text → image samples."""
