# Two commands do all set-up on a fresh machine:
#   make quickstart   the main job
#   make test         the default test suite
# TORCH_SPEC picks the torch build installed when the venv has none (a CPU wheel by
# default; e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128").

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= speech,tta,metrics,dev,annotate,distributed
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.hfpref-installed
OUTPUT_DIR ?= outputs/quickstart
# One seed by default; `make quickstart SEEDS="0 1 2 3 4"` runs each in $(OUTPUT_DIR)/seed-<k> and summarises them.
SEEDS ?= 0

.PHONY: setup quickstart test test-distributed test-slow bench mutation style quality clean system-deps

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch goes first and only when absent: with no torch present, a bare `torch`
# requirement resolves to a multi-GB CUDA build.
$(STAMP): pyproject.toml Makefile | $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install $(TORCH_SPEC)
	$(PIP) install -e ".[$(EXTRAS)]"
	# speechtokenizer declares torchaudio (CUDA-linked on PyPI; it breaks transformers
	# imports on a CPU torch), so it comes without its declared dependencies.
	$(PIP) install --no-deps "speechtokenizer>=1.0"
	@! $(PY) -c "import torchaudio" 2>/dev/null || { echo "torchaudio is installed in $(VENV); it breaks transformers on a CPU torch: pip uninstall torchaudio"; exit 1; }
	touch $(STAMP)

setup: $(STAMP)

quickstart: setup
	$(VENV)/bin/hfpref quickstart --output-dir $(OUTPUT_DIR) $(if $(word 2,$(SEEDS)),--seeds $(SEEDS),--seed $(SEEDS))

# Debian tools the tests drive, installed for `make test` when absent: chromium and its driver (the annotation app's
# browser test), espeak-ng (the speech world's espeak voices, streaming WAV headers) and ffmpeg (audio written
# through a pipe, MP3 without a Xing header).
SYSTEM_TOOLS := chromium chromedriver espeak-ng ffmpeg
system-deps:
	@missing=0; for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null || missing=1; done; \
	[ $$missing = 0 ] || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y chromium chromium-driver espeak-ng ffmpeg; }

# Two pytest-xdist workers, one per core (tests/conftest.py gives each worker's torch one thread); the multi-process
# launches of tests/recipes/test_distributed.py stay on one worker (xdist_group), so they run once.
test: setup system-deps
	$(PY) -m pytest -q -n 2 --dist loadgroup --durations=25

# Every recipe under DeepSpeed ZeRO-2, ZeRO-3, FSDP2 and DDP on 2 CPU processes, each compared with a 1-process run
# (`make test` runs one engine per recipe). One pytest process: each launch uses both cores.
test-distributed: setup
	$(PY) -m pytest -q -m distributed tests/recipes/test_distributed.py

test-slow: setup
	$(PY) -m pytest -q -m slow

# Realistic one-line bugs (mutation/mutants/*.toml) planted one at a time in a copy of the tree, each checked against
# the tests that cover it; ends with `RATIO mutation_score=...` (README, "Mutation testing").
mutation: setup
	$(PY) mutation/run.py --workers 2

bench: setup
	@for f in bench/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

style: setup
	$(VENV)/bin/ruff format hfpref recipes tests bench mutation
	$(VENV)/bin/ruff check --fix hfpref recipes tests bench mutation

quality: setup
	$(VENV)/bin/ruff format --check hfpref recipes tests bench mutation
	$(VENV)/bin/ruff check hfpref recipes tests bench mutation

clean:
	rm -rf $(VENV) outputs build *.egg-info .mutation
