# lorakit-nb — every target creates the virtual environment first if it is missing.
#   make run    execute all notebooks headless (CPU/offline profile) into runs/, print their numbers
#   make smoke  every notebook on tiny random models and tiny data (plumbing only, <= 3 min), into runs/smoke/
#   make test   run the test suite (unit tests + every notebook through papermill)
#   make lab    open the notebooks in JupyterLab
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# PyTorch's CPU build by default, from PyTorch's CPU wheel index (PyPI's default `torch` on Linux is a
# multi-GB CUDA build); where that index cannot be reached, the default index is tried. On a CUDA machine:
# make run TORCH_SPEC="torch" TORCH_INDEX="" (the default index's CUDA build), or keep a preinstalled torch.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP := $(VENV)/.lorakit-installed
# setuptools warns on every editable install that a folder named like the package may shadow it on import;
# in this checkout that folder IS the package, so that one warning is filtered (others still print).

.PHONY: run smoke smoke-test test unit lab data strip clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),($(BIN)/python -c "import urllib.request as u; u.urlopen('$(TORCH_INDEX)/', timeout=5)" 2>/dev/null \
	  && $(BIN)/python -m pip install --quiet --timeout 15 --retries 1 --index-url "$(TORCH_INDEX)" "$(TORCH_SPEC)") \
	  || (echo "$(TORCH_INDEX) not reachable (or its install failed): installing $(TORCH_SPEC) from the default index" && \
	      $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"),$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)")
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet -e ".[dev,run,offline-models,serve]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lorakit)"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/lorakit run --profile cpu --run-dir runs

smoke: $(STAMP)
	$(BIN)/lorakit run --profile smoke --run-dir runs/smoke

test: $(STAMP)
	$(BIN)/ruff check lorakit_nb tests benchmarks
	$(BIN)/python -m pytest -q -rs --durations=15 -m "not smoke"

# The smoke tier as a test (every notebook on tiny models, plumbing asserted); CI runs it after `make test`.
smoke-test: $(STAMP)
	$(BIN)/python -m pytest -q -rs -m smoke

unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not notebook"

lab: $(STAMP)
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet -e ".[lab]"
	$(BIN)/jupyter lab notebooks/

# Regenerate the synthetic Mandarin speech corpus (needs Debian/Ubuntu espeak-ng).
data: $(STAMP)
	command -v espeak-ng >/dev/null || (apt-get update && apt-get install -y espeak-ng)
	$(BIN)/python -m lorakit_nb.speech.synth --sentences data/zh_speech/sentences.txt --out data/zh_speech

strip: $(STAMP)
	$(BIN)/nbstripout notebooks/*.ipynb

clean:
	rm -rf runs $(VENV)
