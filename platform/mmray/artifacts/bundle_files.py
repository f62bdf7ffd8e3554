"""The file names of a model bundle and of a run's model pointers, for readers that need no model code (Ray
Train's controller rewrites the pointers; Tune's results read them)."""

MANIFEST = "bundle.json"
MODEL_CONFIG = "model.yaml"
TASK_CONFIG = "task.yaml"
WEIGHTS = "model.safetensors"
BEST_MODEL = "best_model.json"
LATEST_MODEL = "latest_model.json"
