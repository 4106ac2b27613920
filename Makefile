# Two entry points for a fresh clone: `make demo` and `make test`.
PYTHON ?= python3.10
VENV := .venv
BIN := $(VENV)/bin
CONSTRAINTS := requirements/constraints-py310.txt
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Test processes: 2 fits the 2-core, 24 GB CI machine (a demo run peaks at 2.0 GB RSS); a
# test file runs whole in one process, so its module fixtures are built once.
TEST_WORKERS ?= 2
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install demo test test-fast clean

install: $(STAMP)

# Re-runs only when setup.py or the constraints change; a second `make install` is a no-op.
$(STAMP): setup.py $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c $(CONSTRAINTS) uv
	$(BIN)/uv pip install --python $(BIN)/python -c $(CONSTRAINTS) -e ".[test]"
	touch $(STAMP)

demo: install
	$(BIN)/imgpipe demo --workdir $(or $(WORKDIR),demo_workdir)

test: install
	$(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadfile -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) demo_workdir .pytest_cache
