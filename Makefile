# The two commands of the README: `make demo` and `make test`. Both work on a fresh machine:
# they create .venv and install what they need (tests also need Debian's golang-go for
# `go tool pprof` and chromium for the browser tests; both are installed here when missing).
# `make demo` installs only the package and FastAPI (the `demo` extra); `make test` adds the
# dev tool chain to the same venv. Each extra has its own marker file, so neither reinstalls
# the other's packages, and `make demo` after `make test` starts at once.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Other interpreters the unit suite must pass on (pyenv installs; skipped with a notice if absent).
EXTRA_PYTHONS ?= 3.10 3.13

.PHONY: demo test lint unit-other-pythons system-deps bench clean

# The optional C extension (the heap sampler) is built by pip install: a venv whose build is
# older than its sources is reinstalled too (an editable install does not rebuild it).
NATIVE_SOURCES := $(wildcard setup.py src/pyprof_http/*.c)

$(BIN)/.installed: pyproject.toml $(NATIVE_SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev]"
	touch $@

$(BIN)/.installed-demo: pyproject.toml $(NATIVE_SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e ".[demo]"
	touch $@

demo: $(BIN)/.installed-demo
	$(BIN)/python -m uvicorn demo_app.main:app --host 127.0.0.1 --port 8000

system-deps:
	@command -v go >/dev/null 2>&1 && test -x /usr/bin/chromium && command -v callgrind_annotate >/dev/null 2>&1 || { \
		echo "installing golang-go, chromium and valgrind (callgrind_annotate) from Debian"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go chromium valgrind >/dev/null; }

# Each other interpreter gets its own venv, rebuilt when pyproject.toml changes. A missing
# interpreter is an error, not a skip: the suite must have run on every version it claims.
# Every interpreter runs even when an earlier one failed; the step fails at the end. (A shell
# snippet rather than a sub-make, so that `make -n test` only prints what it would run.)
OTHER_PYTHONS = failed_v=""; for v in $(EXTRA_PYTHONS); do \
		py=$$(ls $(HOME)/.pyenv/versions/$$v*/bin/python$$v 2>/dev/null | head -n1); \
		[ -n "$$py" ] || py=$$(command -v python$$v); \
		if [ -z "$$py" ]; then echo "python$$v not found (pyenv install $$v): cannot run its unit tests"; failed_v="$$failed_v $$v"; continue; fi; \
		if [ ! -x $(VENV)-$$v/bin/pytest ] || [ pyproject.toml -nt $(VENV)-$$v/.installed ] || \
				{ [ -n "$(NATIVE_SOURCES)" ] && [ -n "$$(find $(NATIVE_SOURCES) -newer $(VENV)-$$v/.installed 2>/dev/null)" ]; }; then \
			rm -rf $(VENV)-$$v && $$py -m venv $(VENV)-$$v && \
			$(VENV)-$$v/bin/pip install -q --disable-pip-version-check -e ".[dev]" && \
			touch $(VENV)-$$v/.installed || { failed_v="$$failed_v $$v(install)"; continue; }; \
		fi; \
		echo "== unit tests on $$($$py --version)"; \
		$(VENV)-$$v/bin/pytest -q -p no:cacheprovider --ignore=tests/integration || failed_v="$$failed_v $$v"; \
	done; \
	if [ -n "$$failed_v" ]; then echo "unit tests failed on python:$$failed_v"; false; fi
LINT = $(BIN)/ruff check src tests demo_app benchmarks && $(BIN)/mypy

lint: $(BIN)/.installed
	$(LINT)

unit-other-pythons:
	@$(OTHER_PYTHONS)

# The full suite (integration: real uvicorn, go tool pprof, Chromium) runs first, then lint and
# the other interpreters, whatever failed before: one flaky step must not hide the others'
# results. The target fails at the end and names every step that failed.
test: $(BIN)/.installed system-deps
	@failed=""; \
	echo "== full suite on $$($(BIN)/python --version)"; \
	$(BIN)/pytest -q || failed="$$failed full-suite"; \
	echo "== lint"; \
	( $(LINT) ) || failed="$$failed lint"; \
	( $(OTHER_PYTHONS) ) || failed="$$failed other-pythons"; \
	if [ -n "$$failed" ]; then echo "make test FAILED:$$failed"; exit 1; fi; \
	echo "make test: all steps passed"

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/stacks.py

clean:
	rm -rf $(VENV) $(VENV)-* .pytest_cache .mypy_cache .ruff_cache
