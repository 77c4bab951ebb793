# The two commands of the README: `make demo` and `make test`. Both work on a fresh machine:
# they create .venv and install what they need (tests also need Debian's golang-go for
# `go tool pprof` and chromium for the browser tests; both are installed here when missing).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Other interpreters the unit suite must pass on (pyenv installs; skipped with a notice if absent).
EXTRA_PYTHONS ?= 3.10 3.13

.PHONY: demo test lint unit-other-pythons system-deps bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/uvicorn demo_app.main:app --host 127.0.0.1 --port 8000

system-deps:
	@command -v go >/dev/null 2>&1 && test -x /usr/bin/chromium && command -v callgrind_annotate >/dev/null 2>&1 || { \
		echo "installing golang-go, chromium and valgrind (callgrind_annotate) from Debian"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go chromium valgrind >/dev/null; }

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests demo_app benchmarks
	$(BIN)/mypy

# Each other interpreter gets its own venv, rebuilt when pyproject.toml changes. A missing
# interpreter is an error, not a skip: the suite must have run on every version it claims.
unit-other-pythons:
	@for v in $(EXTRA_PYTHONS); do \
		py=$$(ls $(HOME)/.pyenv/versions/$$v*/bin/python$$v 2>/dev/null | head -n1); \
		[ -n "$$py" ] || py=$$(command -v python$$v); \
		if [ -z "$$py" ]; then echo "python$$v not found (pyenv install $$v): cannot run its unit tests"; exit 1; fi; \
		if [ ! -x $(VENV)-$$v/bin/pytest ] || [ pyproject.toml -nt $(VENV)-$$v/.installed ]; then \
			rm -rf $(VENV)-$$v && $$py -m venv $(VENV)-$$v && \
			$(VENV)-$$v/bin/pip install -q --disable-pip-version-check -e ".[dev]" && \
			touch $(VENV)-$$v/.installed || exit 1; \
		fi; \
		echo "== unit tests on $$($$py --version)"; \
		$(VENV)-$$v/bin/pytest -q -p no:cacheprovider --ignore=tests/integration || exit 1; \
	done

test: $(BIN)/.installed system-deps lint unit-other-pythons
	@echo "== full suite on $$($(BIN)/python --version)"
	$(BIN)/pytest -q

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/stacks.py

clean:
	rm -rf $(VENV) $(VENV)-* .pytest_cache .mypy_cache .ruff_cache
