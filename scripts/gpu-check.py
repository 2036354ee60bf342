#!/usr/bin/env python3
"""Check the NVML inventory, placement, foreign memory, eviction, energy and the memory estimates of
real models' shapes on a real GPU machine, in one call.

    PYTHONPATH=. python scripts/gpu-check.py [MODELS_DIR]      # default: ./examples
    PYTHONPATH=. python scripts/gpu-check.py --inventory tests/fixtures/inventories/h200-mig.json

For the lent GPU machine: nvidia-ml-py, pyyaml, perhaps torch; no Docker, no network, perhaps no
pydantic and no weights. Six parts, each printed and (with $OUT set) written as JSON there:

1. inventory (inventory.json): the real inventory, table and JSON, compared with nvidia-smi.
2. plan (plan.json): the manifests of MODELS_DIR plus a few synthetic ones (gpu_memory given, so
   no weights are read) placed onto this machine; replicas of one model spread over GPUs.
3. foreign memory (foreign.json): this process takes 4 GiB of GPU 0 with torch; the inventory read
   again shows the free memory ~4 GiB lower and this process as one modelctl does not manage, and a
   replica that needs nearly all of GPU 0 goes Pending with a reason naming it; freed, it is back.
   Skipped (saying why) without torch, CUDA or a live GPU.
4. eviction (eviction.json): the reconciler's on-demand rule against GPU 0's real inventory: an
   idle model (a stand-in container holding GPU 0) is evicted for a wanted one (a request waits)
   when both do not fit, and the wanted one is placed on GPU 0 once the idle one is gone. Needs the
   manifest models (pydantic); skipped, saying so, without it.
5. energy (energy.json): NVML's energy counter and power of the GPU torch calls cuda:0, read every
   second while a PyTorch bf16 matmul loop runs on it for 20 s (MODELCTL_GPU_CHECK_ENERGY_S), fed
   to the console's EnergyMeter as the controller does (this process the GPU's one replica, each
   matmul a "token"): joules, average watts, J per matmul and per TFLOP, the inventory after as
   JSON. Without torch a plain CPU busy loop runs instead (the GPU idles; said so); without
   aiohttp/prometheus_client (the meter's module needs them) the counter is read, the meter not.
6. shapes (shapes.json): the files beside the weights (issue 18) in the memory estimate, on this
   inventory. Header-only GGUFs with the real shapes of real models, sparse (extended to their
   real length, no data written: the weights cannot be here) in a temp folder: Llama-3.1-70B
   Q4_K_M split in 3 shards as llama-gguf-split writes them, Llama-3.1-8B Q4_K_M with Llama-3.2-1B
   Q4_K_M as draft, and Llama-3.1-8B with two rank-16 f16 LoRA adapters. Loaded by the manifest
   loader (roots, shards, adapter checks), estimated (context 8192 x 8 sequences), each placed
   alone with num_gpus 1: a table of weights / KV / draft / adapters / projector / overhead / total
   per GPU beside the NVML total and free memory of the GPU it landed on; each part checked
   against the arithmetic on the shapes written; whether the 70B fits an 80 GiB H100. Needs
   pydantic (the loader); skipped, saying so, without it.

Parts 1-2 import only controller.placement (standard library inside); the manifest loader
(pydantic) is used when importable, else the YAML is read directly. A summary (summary.json) ends
the output. Exit code 0 when every part is ok or skipped (no GPU is a result to print, not a
failure), 1 when a check failed.

The parts live in the package beside this file, scripts/gpucheck/ (one module per part, ``main``
runs them); this file is only the command line, so it runs the same from a copy of the tree.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the package beside it, however it is run

from gpucheck.main import main

if __name__ == "__main__":
    sys.exit(main())
