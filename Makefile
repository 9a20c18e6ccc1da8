# Set-up and the two everyday jobs. `make demo` and `make test` each create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup system-deps demo test test-fast lint clean

$(BIN)/vlmbench: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

setup: $(BIN)/vlmbench

# WordNet for the WUPS metric comes from Debian/Ubuntu's wordnet-base, and Chromium for the browser tests of
# `vlmbench view` from the chromium package, when they can be installed here.
system-deps:
	@if [ -d /usr/share/wordnet ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends wordnet-base >/dev/null; \
	else echo "note: install the Debian/Ubuntu package wordnet-base (or see docs/metrics.md) for WUPS"; fi
	@if command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	else echo "note: install the Debian/Ubuntu package chromium for the browser tests of vlmbench view"; fi

# The main job: a real VLM and the blind baseline on the bundled sample, then the leaderboard.
demo: setup system-deps
	$(BIN)/vlmbench run --model blip --model prior --task abo_sample --output-dir runs

# The whole suite on every core (pytest-xdist: one test at a time to whichever worker is free, the
# longest first; see tests/conftest.py), with the slowest tests listed. CI runs this.
test: setup system-deps
	$(BIN)/python -m pytest -n auto --maxschedchunk 1 --durations=15

# Day-to-day: everything but the tests marked slow (end-to-end runs, launches, kill-and-resume).
test-fast: setup system-deps
	$(BIN)/python -m pytest -n auto --maxschedchunk 1 -m "not slow" --durations=15

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
