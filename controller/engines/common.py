"""What both engines do alike: mount the weights read-only and request GPUs by device ID."""

from __future__ import annotations

from pathlib import Path

from controller.errors import EngineError
from controller.manifest_loader import LoadedModel
from controller.spec import GpuRequest, Mount

MODELS_DIR = "/models"  # where weights appear inside every engine container


def weights_mount(model: LoadedModel, *, whole_folder: bool = False) -> tuple[Mount, str]:
    """A read-only mount of the weights and the path the engine should load inside the container.

    ``whole_folder``: a weights file is mounted with the folder it sits in (vLLM needs the
    config.json and tokenizer beside the .safetensors), and the path returned is that folder.

    Raises EngineError when the weights were not resolved against the model roots: a spec must
    never mount a path that was not checked.
    """
    if model.weights is None:
        raise EngineError(f"model {model.name}: weights were not checked against the model roots")
    host = Path(model.weights)
    if whole_folder and host.is_file():
        host = host.parent
    target = f"{MODELS_DIR}/{model.name}/{host.name}"
    return Mount(source=str(host), target=target, read_only=True), target


def gpu_request(gpus: tuple[str, ...]) -> GpuRequest | None:
    return GpuRequest(device_ids=gpus) if gpus else None
