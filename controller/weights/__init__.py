"""Weights: what weight files say about themselves, from their headers alone, never by loading tensors.

``gguf`` and ``safetensors`` read each format's header, ``config`` a safetensors folder's
config.json; ``info`` is what any of them yields (bytes, architecture) and the bounds a hostile
header is held to; ``read`` picks the reader by format, once per version of the files;
``describe`` says what a model's weights are for the APIs that show models (Ollama's /api/show).
Memory estimates are placement's (``controller.placement.memory``), built on ``read``.
No Docker, no HTTP, no NVML.
"""
