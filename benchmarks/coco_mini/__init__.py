"""coco-mini retrieval benchmark: frozen features once, random halvings into 40-image folds, head training
in this process, baselines, a Ray Tune search and a check against mmray's trainer."""
