"""Container runtimes: the edge where specs become running containers (Docker today)."""
