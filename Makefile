# Two commands set everything up on a fresh machine (Python 3.11 + pip):
#   make demo   — create .venv, install, run the main job on the bundled data
#   make test   — create .venv, install, run the test suite
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow bench bench-train bench-mil venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --upgrade pip -q
	$(VENV)/bin/python -m pip install -e '.[gui,test,cluster]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dnd demo --out demo_output

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python -m pytest -q

test-slow: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python -m pytest -q -m slow

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/extract_throughput.py

bench-train: $(STAMP)
	$(VENV)/bin/python benchmarks/train_speed.py

bench-mil: $(STAMP)
	$(VENV)/bin/python benchmarks/mil_benchmarks.py --out benchmarks/results/mil_benchmarks.jsonl

clean:
	rm -rf demo_output test-artifacts .pytest_cache
