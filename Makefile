# Set-up is two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DATA   := /usr/share/datasets/fashion-mnist

.PHONY: demo test test-under-load data bench clean agent-jetson venv-litert test-litert

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

# LiteRT (.tflite) lives in a venv of its own: litert-torch pins older typing_extensions, pydantic and anyio
# than the kit's venv holds (docs/phones.md). `make test-litert` runs the LiteRT tests there.
LITERT_VENV := .venv-litert
$(LITERT_VENV)/.installed: pyproject.toml
	test -x $(LITERT_VENV)/bin/python || $(PYTHON) -m venv $(LITERT_VENV)
	$(LITERT_VENV)/bin/python -m pip install -q --upgrade pip
	$(LITERT_VENV)/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(LITERT_VENV)/bin/python -m pip install -q -e '.[onnx,litert]' 'pytest>=8'
	touch $@
venv-litert: $(LITERT_VENV)/.installed
test-litert: venv-litert data
	$(LITERT_VENV)/bin/python -m pytest -p no:cacheprovider -k litert tests/test_litert.py \
	  tests/test_exporter_conformance.py tests/test_runtime_conformance.py tests/test_agent.py

clean:
	rm -rf $(VENV) $(LITERT_VENV) .pytest_cache

# On a Jetson only (JetPack 6: TensorRT 10.3 and NVIDIA's CUDA torch are system packages, not PyPI wheels):
# a venv that sees the system site-packages, ofa-kit without its PyPI dependencies, the few light ones the
# agent needs, then ofa-kit's own TensorRT check. Steps and the torch wheel: README, "Measuring on a Jetson".
JETSON_VENV := .venv-jetson
JETSON_DEPS := typer rich safetensors 'tomli; python_version < "3.11"' 'onnx>=1.16' 'numpy>=1.24,<2'
agent-jetson:
	@test -f /etc/nv_tegra_release || { echo "error: agent-jetson is for a Jetson (no /etc/nv_tegra_release here); elsewhere run: make" >&2; exit 2; }
	test -x $(JETSON_VENV)/bin/python || /usr/bin/python3 -m venv --system-site-packages $(JETSON_VENV)
	@$(JETSON_VENV)/bin/python -c "import torch" 2>/dev/null || { echo "error: no torch in $(JETSON_VENV): install NVIDIA's PyTorch wheel for your JetPack (README: Measuring on a Jetson), then rerun" >&2; exit 2; }
	$(JETSON_VENV)/bin/python -m pip install -q -e . --no-deps
	$(JETSON_VENV)/bin/python -m pip install -q $(JETSON_DEPS)
	@$(JETSON_VENV)/bin/python -c "from deploy_targets.tensorrt_export import tensorrt_unavailable as u; r = u(); print(f'error: {r}' if r else 'TensorRT ready'); raise SystemExit(2 if r else 0)"
	@echo "start the agent: $(JETSON_VENV)/bin/ofakit agent serve --token-file tok"
