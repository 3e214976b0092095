# The two commands a new user needs: `make demo` runs the main job on bundled data,
# `make test` runs the test suite. Both create .venv on first use and install the
# exact versions in constraints.txt, the ones the tests ran with.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-output

.PHONY: install demo test test-fast bench bench-fast clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

demo: install
	$(BIN)/stitchc demo -o $(DEMO_DIR)

# pytest exits with 5 when it collected no tests; treat that as a failure.
test: install
	$(BIN)/python -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python -m benchmarks

bench-fast: install
	$(BIN)/python -m benchmarks --fast

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
