# Two entry points for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench setup system-deps clean

# Tests start their own redis-server on a free port and use sipp as the SIP peer (its
# recordings too); install them where they are missing.
system-deps:
	@command -v redis-server >/dev/null && command -v sipp >/dev/null || { \
		echo "installing redis-server and sip-tester (sipp) for the tests"; \
		apt-get update -qq && apt-get install -y -qq redis-server sip-tester >/dev/null; }

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python >= 3.11 is required (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,silero]'
	touch $(STAMP)

setup: $(STAMP)

# A local .env with a fixed API token lets `voice-gateway call` read the gateway's events.
.env:
	echo "API_TOKEN=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(24))')" > .env

run: $(STAMP) .env
	$(BIN)/voice-gateway serve $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP) system-deps lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.media_path
	$(BIN)/python -m bench.turn_overhead

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
