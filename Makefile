# One command to set up, test and train: `make test`, `make train ARGS="task=repeat_copy seed=2"`.
# Every target builds .venv on first use; .ci/run runs `make venv` then pytest (as `make test`) on a fresh clone.
# The manual equivalent is in README.md (Install).

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
# Stamp of a finished install: newer than pyproject.toml means nothing to do (make is idempotent),
# older or missing means install again; an interrupted install leaves no stamp and is redone.
INSTALLED := $(VENV)/.installed
# Python 3.11 if it runs, else python3 (pyproject.toml's requires-python refuses anything older).
# Deferred (?=), so it is only looked up when .venv has to be created.
BASE_PYTHON ?= $(shell for p in python3.11 python3; do $$p -c '' 2>/dev/null && { echo $$p; break; }; done)
# torch's pin, read from pyproject.toml so that there is one place to change it.
TORCH = $(shell grep -o '"torch==[^"]*"' pyproject.toml | tr -d '"')
ARGS ?=
# Measured on 2 CPU cores, one run per core (README, Results).
RESULTS_ESTIMATE := 20 runs (5 presets x seeds 1-4), two at a time on 2 cores: about 2 hours of wall time, most of it priority sort (4 x about 40 minutes) and N-grams (4 x 10-30 minutes); more on a slower machine

# The next line of Hydra's Optuna sweeper (hydra-optuna-sweeper 1.4 release candidates, optuna 5,
# optuna-dashboard) in its own environment: pyproject.toml's requirements with tools/next_line.txt's
# changes (tools/next_line.py merges them). Its tests: the sweep, pruning and analysis ones, and
# the next line's own (a stable-line study upgraded, optuna-dashboard), which need .venv as well,
# and a search stopped by Ctrl-C (its trials queued again).
NEXT := .venv-next
NEXT_INSTALLED := $(NEXT)/.installed
NEXT_TESTS := tests/test_optuna_compat.py tests/test_sweeps.py tests/test_pruning.py tests/test_sweep_reruns.py \
	tests/test_analysis_hpo.py tests/test_next_line.py \
	tests/test_resume.py::test_ctrl_c_puts_a_searchs_trial_back_for_the_next_invocation

.PHONY: venv venv-next test test-fast test-next coverage train lint results clean

venv: $(INSTALLED)

# torch goes first, pinned and with pip: a CPU wheel lies where pip looks (find-links), while an
# unpinned torch, or one resolved with the rest, pulls a multi-GB CUDA build; uv and poetry do
# not read pip's find-links. Then the project itself, editable, with pytest and ruff.
$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || { test -n "$(BASE_PYTHON)" || { echo "make: no python3.11 or python3 found" >&2; exit 1; }; \
		echo "creating $(VENV) with $(BASE_PYTHON)"; $(BASE_PYTHON) -m venv $(VENV); }
	@test -n "$(TORCH)" || { echo "make: no torch==VERSION pin in pyproject.toml" >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install "$(TORCH)"
	$(BIN)/python -m pip install -e ".[dev]"
	@# train.compile=fused's C++ library, built for this CPU (ntm/fused.py); without a C++ compiler
	@# only that option is missing, so a failed build does not stop the install.
	$(BIN)/python -m ntm.fused || echo "make: could not build ntm.fused's library: train.compile=fused will not run, and auto compiles instead" >&2
	@touch $@

venv-next: $(NEXT_INSTALLED)

$(NEXT_INSTALLED): pyproject.toml tools/next_line.txt tools/next_line.py
	@test -x $(NEXT)/bin/python || { test -n "$(BASE_PYTHON)" || { echo "make: no python3.11 or python3 found" >&2; exit 1; }; \
		echo "creating $(NEXT) with $(BASE_PYTHON)"; $(BASE_PYTHON) -m venv $(NEXT); }
	$(NEXT)/bin/python -m pip install --quiet --upgrade pip
	$(NEXT)/bin/python -m pip install "$(TORCH)"
	$(NEXT)/bin/python tools/next_line.py > $(NEXT)/requirements.txt
	$(NEXT)/bin/python -m pip install -r $(NEXT)/requirements.txt
	$(NEXT)/bin/python -m pip install --no-deps -e .
	@touch $@

# The whole suite: real short trainings, sweeps and a one-node SLURM cluster (its time: README, Test).
test: $(INSTALLED)
	$(BIN)/python -m pytest

# Everything but the tests marked slow (subprocess sweeps, resumes, compiled steps, SLURM): a few minutes less (README, Test).
test-fast: $(INSTALLED)
	$(BIN)/python -m pytest -m "not slow"

# Line coverage of the fast path (pytest-cov): what the tests run in their own processes, not in
# the run.py subprocesses of the slow tests. A change to the tests keeps it from falling.
coverage: $(INSTALLED)
	$(BIN)/python -m pytest -m "not slow" --cov=ntm --cov=hydra_plugins --cov=analysis --cov-report=term

# The sweep, pruning and analysis tests on the next line (a few minutes; not part of `make test`).
test-next: $(NEXT_INSTALLED) $(INSTALLED)
	$(NEXT)/bin/python -m pytest $(NEXT_TESTS)

train: $(INSTALLED)
	$(BIN)/python run.py $(ARGS)

# The README's Results: every task's preset on seeds 1-4 (sweep=results), then the table and
# figures. Resumable: the same command again trains only what is missing.
results: $(INSTALLED)
	@echo "sweep=results: $(RESULTS_ESTIMATE)"
	$(BIN)/python run.py -m sweep=results
	$(BIN)/python -m analysis multirun/results --group-by task.name --markdown --plots docs/results
	cp docs/results/tasks.png docs/results_tasks.png   # the figure README.md shows

lint: $(INSTALLED)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) $(NEXT)
