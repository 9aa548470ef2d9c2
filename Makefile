# The two commands a new user needs:  make bench   and   make test.
# Both create .venv and install what is missing first (idempotent: a stamp file tracks it).
PY        ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
METHOD    ?= maskgen
VERSUS    ?= erm
DATASET   ?= synth
SEEDS     ?= 0,1,2
RESULTS   ?= results
BENCH_ARGS ?=
include mk/sweep.mk
TORCH_PIN ?= $(shell $(PY) -c "import sys; print('torch==2.13.0' if sys.version_info[:2]==(3,11) else '')")

.PHONY: install bench test tables status clean-venv help

help:
	@echo "make bench [METHOD=maskgen] [VERSUS=erm|none] [DATASET=synth] [SEEDS=0,1,2] [RESULTS=results]"
	@echo "make test             run the test suite"
	@echo "make tables           rebuild tables from RESULTS"
	@echo "make status           show run states in RESULTS"
	@echo "make sweep SWEEP=sweeps/paper.yaml [EXECUTOR=slurm PARTITION=gpu] [DRY_RUN=1] [RETRY_FAILED=1]"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || \
	  (echo "Installing torch (CPU build if a local one exists; keep your CUDA build otherwise)"; \
	   $(BIN)/pip install -q $(TORCH_PIN) 2>/dev/null || $(BIN)/pip install -q "torch>=2.4,!=2.9.*")
	$(BIN)/pip install -q -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

bench: $(STAMP)
	$(BIN)/dgbench bench --method $(METHOD) --versus $(VERSUS) --dataset $(DATASET) --seeds $(SEEDS) --results $(RESULTS) $(EXECUTOR_ARGS) $(BENCH_ARGS)

# The suite runs in TEST_WORKERS processes (pytest-xdist; one per CPU core, at most 4; a test
# file stays in one process, so its module fixtures are built once). TEST_WORKERS=0: one process.
TEST_WORKERS ?= auto
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile $(PYTEST_ARGS)

tables: $(STAMP)
	$(BIN)/dgbench tables --results $(RESULTS) --out $(RESULTS)/tables

status: $(STAMP)
	$(BIN)/dgbench status --results $(RESULTS)

clean-venv:
	rm -rf $(VENV)
