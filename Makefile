# Everything a fresh machine needs comes from here: `make demo` and `make test` create the
# virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench clean

$(BIN)/kcing: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/kcing

# Offline: the bundled samples become NDJSON files for the Elasticsearch _bulk API.
demo: install
	rm -rf demo-output
	$(BIN)/kcing feed_es --source samples --output demo-output --db demo-output/kcing.db
	ls -l demo-output

test: install
	$(BIN)/python -m pytest -q

# Every performance target against its yardstick; sizes: make bench BENCH_ARGS="--rss-sizes 1000,100000"
bench: install
	$(BIN)/python bench/targets.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) demo-output .pytest_cache
