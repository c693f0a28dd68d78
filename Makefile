# Everything a fresh machine needs comes from here: `make demo` and `make test` create the
# virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install realengine demo test bench clean

$(BIN)/kcing: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/kcing

# The real Elasticsearch node the `realengine` tests start (tests/realengine, jars cached in ~/.m2).
# Without Java and Maven those tests are skipped, except in CI (CI=true), where that is an error.
REALENGINE := tests/realengine/target/classpath.txt
$(REALENGINE): tests/realengine/pom.xml $(shell find tests/realengine/src -name '*.java')
	mvn -q -B -f tests/realengine/pom.xml package
	touch $@

realengine:
	@if command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory $(REALENGINE); \
	elif [ "$$CI" = true ]; then \
		echo "CI needs Java 17+ and Maven to build the real Elasticsearch node (tests/realengine)" >&2; exit 1; \
	else \
		echo "no Java or Maven: the tests marked realengine will be skipped"; \
	fi

# Offline: the bundled samples become NDJSON files for the Elasticsearch _bulk API.
demo: install
	rm -rf demo-output
	$(BIN)/kcing feed_es --source samples --output demo-output --db demo-output/kcing.db
	ls -l demo-output

# Most tests wait on sockets and timeouts, so two processes a core keep the cores busy (one a core
# kept 2 cores half busy); more than four gain little and start more test servers.
TEST_PROCESSES ?= $(shell n=$$(nproc 2>/dev/null || echo 1); n=$$((2 * n)); [ $$n -gt 4 ] && n=4; echo $$n)

test: install realengine
	$(BIN)/python -m pytest -q -n $(TEST_PROCESSES)

# The `bench` extra: orjson, one of the JSON libraries the parsing floor compares (kcing does not use it).
$(VENV)/.bench-extra: pyproject.toml $(BIN)/kcing
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

# Every performance target against its yardstick; sizes: make bench BENCH_ARGS="--rss-sizes 1000,100000 --rss-log-lines 20"
bench: install $(VENV)/.bench-extra
	$(BIN)/python bench/targets.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) demo-output .pytest_cache tests/realengine/target
