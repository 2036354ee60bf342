"""GPUs: what this machine's GPUs are and how they are used, and the one place that asks NVML.

``inventory`` is the data (static facts apart from live usage, saved and read back as JSON);
``nvml`` reads it from the driver (no NVML means no GPUs, with the reason). Placement plans over an
Inventory and never reads NVML itself.
"""
