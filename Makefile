# Set-up is two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DATA   := /usr/share/datasets/fashion-mnist

.PHONY: demo test test-under-load data bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test,onnx]'
	touch $(STAMP)

# Fashion-MNIST from Debian, when missing and when apt-get can be used (root); otherwise say how.
data:
	@if [ -f $(DATA)/train-images-idx3-ubyte.gz ]; then echo "Fashion-MNIST: $(DATA)"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
	  || echo "warning: could not install dataset-fashion-mnist"; \
	else echo "note: Fashion-MNIST missing; run: sudo apt-get install dataset-fashion-mnist"; fi

demo: $(STAMP) data
	$(VENV)/bin/ofakit demo

test: $(STAMP) data
	$(PY) -m pytest

# The suite RUNS times in a row while a busy loop keeps one core busy: every run must be green.
RUNS ?= 5
test-under-load: $(STAMP) data
	@$(PY) -c "while True: pass" & burner=$$!; trap "kill $$burner" EXIT; \
	for i in $$(seq $(RUNS)); do echo "== run $$i of $(RUNS), one core busy"; \
	  $(PY) -m pytest -p no:cacheprovider || exit 1; done; echo "== $(RUNS) of $(RUNS) runs green under load"

bench: $(STAMP)
	$(PY) benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) .pytest_cache
