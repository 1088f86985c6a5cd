# gemma-lora: `make run-notebooks` runs the notebooks, `make test` runs the tests.
# Both create .venv from requirements.txt first when it is missing or older
# than requirements.txt (and do nothing when it is current).

VENV       ?= .venv
PYTHON     := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
NOTEBOOK   ?= notebooks/*.ipynb
PARAMS     ?=
PYTEST_ARGS ?=
# Test processes (pytest-xdist), each taking whole test files: the tests mostly
# compile on one thread, so two processes keep a 2-core machine busy.
TEST_WORKERS ?= 2
RANKS      ?= 1 2 4 8 16
ARGS       ?=
SWEEP_NOTEBOOK ?= notebooks/01_finetune_gemma_lora.ipynb
RUN_ROOT   := runs/$(shell date +%Y%m%d-%H%M%S)

export KERAS_BACKEND := jax
# Silence TensorFlow's C++ start-up chatter (TF only runs tokenizers and tf.data here).
export TF_CPP_MIN_LOG_LEVEL := 2
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup setup-interop test run-notebooks sweep export benchmark benchmark-generation wheel clean

setup: $(STAMP)

# Optional extras for Hugging Face interop (gemma_lora.hf_interop) and its
# tests: PyTorch CPU, transformers, peft, llama-cpp-python. Without them those
# tests skip. llama-cpp-python builds llama.cpp from source, with portable AVX2
# kernels: the native build (AMX on) segfaults on the Xeons here, and an AVX-512
# build stops with "Illegal instruction" on the AMD EPYCs (no AVX-512). pip's wheel
# cache is skipped so that a build made for another CPU is never reused.
INTEROP_STAMP := $(VENV)/.interop-installed
LLAMA_CPP_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
  -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF \
  -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF

setup-interop: $(INTEROP_STAMP)

$(INTEROP_STAMP): $(STAMP) requirements-interop.txt
	CMAKE_ARGS="$(LLAMA_CPP_CMAKE_ARGS)" $(PYTHON) -m pip install --quiet --no-cache-dir -r requirements-interop.txt
	touch $(INTEROP_STAMP)

# The pinned requirements, then the package itself, editable: `import gemma_lora`
# works from any folder with .venv's python, and runs the working tree's code.
# (PYTHONWARNINGS hides setuptools' notice that editable installs are editable.)
$(STAMP): requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements.txt
	PYTHONWARNINGS=ignore $(PYTHON) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(PYTHON) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Executes each notebook with papermill into runs/<timestamp>/<notebook>/,
# passing `run_dir` plus any PARAMS (e.g. PARAMS="-p rank 8 -p max_steps 50").
# papermill exits non-zero and prints the failing cell's error if a cell fails.
# The notebooks' own output streams here as it is printed (--stdout-file/--stderr-file -:
# the cells' text only, no cell markers or object reprs), with progress as plain lines
# every few seconds (GEMMA_LORA_PROGRESS=lines) rather than papermill's cell counter.
run-notebooks: $(STAMP)
	@set -e; for nb in $(NOTEBOOK); do \
	  name=$$(basename $$nb .ipynb); out=$(RUN_ROOT)/$$name; \
	  mkdir -p $$out; echo "==> $$nb -> $$out/$$name.ipynb"; \
	  GEMMA_LORA_PROGRESS=$${GEMMA_LORA_PROGRESS:-lines} \
	  $(PYTHON) -m papermill $$nb $$out/$$name.ipynb --cwd . \
	    --no-progress-bar --stdout-file - --stderr-file - \
	    -p run_dir $$out $(PARAMS); \
	done

# Runs SWEEP_NOTEBOOK once per rank in RANKS into runs/<timestamp>-sweep/rank-<r>/
# (same PARAMS for every run), then notebooks/03_compare_runs.ipynb on them into
# runs/<timestamp>-sweep/compare/. Ranks and PARAMS are checked before anything runs.
sweep: $(STAMP)
	$(PYTHON) -m gemma_lora.runs.sweep --ranks "$(RANKS)" --notebook $(SWEEP_NOTEBOOK) \
	  --output $(RUN_ROOT)-sweep $(PARAMS)

# Exports a finished run for deployment (README: "Deploy") into $(RUN)/export/, e.g.
# make export RUN=runs/<time>/01_finetune_gemma_lora FORMATS="gguf ollama" GGUF_FILE_TYPE=q8_0.
# FORMATS: transformers gguf gguf_lora ollama peft peft_rank; BASE_MODEL: the Hugging Face
# base the PEFT adapters name (default: the one of the run's preset). Prints each file,
# its size and how to serve it, with the vLLM --max-lora-rank.
RUN            ?=
FORMATS        ?= transformers gguf gguf_lora ollama peft
GGUF_FILE_TYPE ?= f16
HF_DTYPE       ?= float32
BASE_MODEL     ?=

export: $(STAMP)
	$(PYTHON) -m gemma_lora.export.from_run --run-dir "$(RUN)" --formats "$(FORMATS)" \
	  --gguf-file-type "$(GGUF_FILE_TYPE)" --hf-dtype "$(HF_DTYPE)" $(if $(BASE_MODEL),--base-model "$(BASE_MODEL)")

# Training throughput, stock KerasHub fit vs ours (see docs/performance.md),
# e.g. ARGS="--arch gemma3_270m --lengths parametric:0.33 --packing".
benchmark: $(STAMP)
	$(PYTHON) benchmarks/train_throughput.py $(ARGS)

# KerasHub generate vs our decoder on the real Gemma 3 270M (ARGS="--prompts 64 --adapter DIR").
benchmark-generation: $(STAMP)
	$(PYTHON) benchmarks/generation_speed.py $(ARGS)

# The package as $(DIST)/gemma_lora-<version>-py3-none-any.whl, e.g. to attach to a
# Kaggle notebook as a dataset (README: "On Kaggle / on Colab"). Its dependencies
# are ranges without backend pins, so installing it keeps a host's JAX, TensorFlow
# and Keras. build/ is removed first: setuptools would pack stale modules from it.
DIST ?= dist

wheel: $(STAMP)
	rm -rf build $(DIST)/gemma_lora-*.whl
	$(PYTHON) -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir $(DIST) .
	rm -rf build
	@ls $(DIST)/gemma_lora-*.whl

clean:
	rm -rf $(VENV) runs .pytest_cache build dist
