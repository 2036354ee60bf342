"""Placement: which replica gets which part of the hardware (the GPUs of ``controller.gpus``, the host).

``memory`` estimates what a replica needs from its weights' headers, KV cache and overhead;
``place`` is the pure GPU placement over (requests, inventory); ``host`` places CPU replicas against
the host's memory budget and cores; ``report`` renders inventory and placement for the CLI.
Pure data in, pure data out: no Docker, no HTTP, no NVML.
"""
