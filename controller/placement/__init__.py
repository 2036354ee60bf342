"""Placement: what hardware there is and which replica gets which part of it.

``inventory`` reads NVML (static facts apart from live usage; no NVML means no GPUs);
``memory`` estimates what a replica needs from its weights' headers, KV cache and overhead;
``place`` is the pure GPU placement over (requests, inventory); ``host`` places CPU replicas against
the host's memory budget and cores; ``report`` renders inventory and placement for the CLI.
Pure data in, pure data out: no Docker, no HTTP.
"""
