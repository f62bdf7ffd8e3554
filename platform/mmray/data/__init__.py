"""Datasets: COCO-format loading, the generated shapes dataset, and their records."""
