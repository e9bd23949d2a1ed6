# The two set-up commands are `make demo` and `make test`; each installs what it needs first.
SHELL := /bin/bash
# uv from PATH, else as a module of the machine's python3 (pip may install it off PATH).
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --locked

.PHONY: setup demo test lint bench build clean

setup:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --locked

demo: setup
	$(RUN) python -m localcloud.demo

test: setup lint
	$(RUN) pytest -n 2 -q

lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy layers/mwaa_control/python/mwaa_control localcloud tests
	@for f in functions/*/app.py; do $(RUN) mypy $$f || exit 1; done
	$(RUN) cfn-lint template.yaml participant.yaml
	$(UV) tool run --from 'checkov==3.3.30' checkov --quiet --compact --skip-download \
		--framework cloudformation -f template.yaml -f participant.yaml

bench: setup
	@echo "No benchmarks yet: the endpoint automation has no speed or memory target."
	@echo "Metadata backup/restore benchmarks arrive with issue 4 (make bench will build the synthetic DB)."

build: setup
	$(UV) tool run --from 'aws-sam-cli==1.170.0' sam build

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache
