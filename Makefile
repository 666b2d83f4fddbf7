# The README's two commands. Both create .venv and install what they need.
# Any supported interpreter (3.11, 3.12, 3.13): `make test PYTHON=python3.13`. Each one gets a
# virtualenv of its own, so switching back and forth reinstalls nothing.
PYTHON ?= python3
ifeq ($(PYTHON),python3)
VENV ?= .venv
else
VENV ?= .venv-$(notdir $(PYTHON))
endif
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

## run: the server on its embedded defaults (SQLite file, .eml outbox, no AWS account, and no
## authentication unless JWT_SECRET is set, with a warning at start)
run: $(STAMP)
	EMAIL_BACKEND=$${EMAIL_BACKEND:-outbox} AUTH_DISABLED=$${AUTH_DISABLED:-true} $(BIN)/python supervisor.py

## test: the whole suite
test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/mypy

## mutants: mutation testing of the pure cores, configured in pyproject.toml's [tool.mutmut]
## (docs/testing.md). Slow (minutes) and not part of `make test`; MUTMUT_CHILDREN=1 on a busy machine.
.PHONY: mutants
mutants: $(STAMP)
	$(BIN)/pip install --quiet 'mutmut>=3.3,<4'
	rm -rf mutants
	$(BIN)/mutmut run --max-children $${MUTMUT_CHILDREN:-2}
	$(BIN)/mutmut results --all true | awk -F': ' '{ split($$1, p, ".x"); m = p[1]; gsub(/ /, "", m); \
	  if ($$1 ~ /scheduler\.x_(run|handle)__/) m = m "(run-loop,not-counted)"; \
	  n[m]++; if ($$2 == "killed" || $$2 == "timeout") k[m]++ } \
	  END { for (m in n) printf "%-24s %4d mutants %4d killed %4d survived %5.1f%%\n", m, n[m], k[m], n[m] - k[m], 100 * k[m] / n[m] }'

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
