# The two commands the README promises: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck pytest docs demo demo-plan bench bench-scale bench-llm clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

# The documentation site (mkdocs-material + mkdocstrings); --strict turns warnings into errors.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

test: lint typecheck docs pytest

# Plan the demo goal over flows/ (the heuristic planner, or the LLM configured through
# PREFECT_INTEGRATIONS_AETHER_LLM_*), then run it on Prefect's embedded server: no API URL,
# no key needed. `make demo-plan` runs the hand-written example plan instead.
DEMO_GOAL := revenue by region, monthly trend, detect anomalies, then build the report and save it
# Every run is a fresh execution; `make demo DEMO_FLAGS="--resume latest"` continues the last one.
DEMO_FLAGS :=

demo: $(STAMP)
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/prefect-aether run --goal "$(DEMO_GOAL)" \
		--module flows/pipeline.py --input title="Sales 2026" --input output_dir=out $(DEMO_FLAGS)

demo-plan: $(STAMP)
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/prefect-aether run flows/plan.json \
		--module flows/pipeline.py --input csv_path=flows/data/sales.csv --input output_dir=out \
		$(DEMO_FLAGS)

bench: $(STAMP)
	$(BIN)/python bench/validate.py
	$(BIN)/python bench/execute.py
	$(BIN)/python bench/planning.py
	$(BIN)/python bench/taskbench.py
	$(BIN)/python bench/realworld.py
	$(BIN)/python bench/retrieval.py
	$(BIN)/python bench/catalog.py

# A real local model (llama.cpp + a 1.5B instruct model, installed into ~/.cache): the LLM
# planner beside the heuristic one on the real-world set and 60 TaskBench requests. Hours on
# two cores for every goal; BENCH_LLM_FLAGS="--limit 3 --taskbench 10" for a short run.
BENCH_LLM_FLAGS :=

bench-llm: $(STAMP)
	$(BIN)/python bench/llm.py $(BENCH_LLM_FLAGS)

# PostgreSQL and two `prefect server start` processes (PostgreSQL, SQLite): minutes.
bench-scale: $(STAMP)
	$(BIN)/python bench/scale.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache site
