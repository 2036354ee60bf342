"""The files beside the weights in the engines' specs: a projector, a draft, LoRA adapters, each
mounted read-only at its fixed place and named by the engine's own flags (docs/model-shapes.md)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from controller.engines import build_spec
from controller.engines.common import check_targets
from controller.engines.llamacpp import adapter_ids
from controller.errors import EngineError
from controller.manifests.document import ModelManifest
from controller.manifests.model import AdapterFile, ExtraFiles, LoadedModel
from controller.runtime.docker import create_kwargs
from controller.runtime.spec import Mount

ROOT = Path("/srv/models")


def loaded(weights: Path | None, files: ExtraFiles, **doc: object) -> LoadedModel:
    return LoadedModel(ModelManifest.model_validate(doc), "m.yaml", 1, weights, files=files)


def gguf_model(gpus: int = 0, adapters: tuple[str, ...] = ("sea", "sky")) -> LoadedModel:
    """A llama.cpp model with a projector, a draft and ``adapters``, as the loader resolves them."""
    return loaded(
        ROOT / "vlm.gguf",
        ExtraFiles(
            mmproj=ROOT / "vlm" / "mmproj-vlm.gguf",
            draft=ROOT / "small.gguf",
            adapters=tuple(AdapterFile(name, ROOT / f"lora-{name}.gguf") for name in adapters),
        ),
        model="vlm.gguf",
        name="vlm",
        num_gpus=gpus,
        mmproj="vlm/mmproj-vlm.gguf",
        draft="small.gguf",
        adapters=[{"name": name, "path": f"lora-{name}.gguf"} for name in adapters],
    )


def after(command: tuple[str, ...], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_llamacpp_names_projector_draft_and_adapters_at_their_fixed_places() -> None:
    spec = build_spec(gguf_model(), 0, cpus=(0, 1))
    tail = spec.command[spec.command.index("--threads") + 2 :]
    assert tail == (
        "--mmproj",
        "/models/vlm/mmproj/mmproj-vlm.gguf",
        "-md",
        "/models/vlm/draft/small.gguf",
        "--spec-type",
        "draft-simple",
        "--spec-draft-n-max",
        "8",
        "--spec-draft-n-min",
        "1",
        "-ngld",
        "0",
        "--lora-scaled",
        "/models/vlm/adapters/sea.gguf:0",
        "--lora-scaled",
        "/models/vlm/adapters/sky.gguf:0",
        "--cache-ram",  # the RAM prompt cache ignores adapters (docs/model-shapes.md)
        "0",
        "--jinja",  # the chat template's tool calls and reasoning (tests/engines/test_parsers.py)
        "--reasoning-format",
        "deepseek",
    )
    assert [(m.source, m.target, m.read_only, m.type) for m in spec.mounts] == [
        ("/srv/models/vlm.gguf", "/models/vlm/vlm.gguf", True, "bind"),
        ("/srv/models/vlm/mmproj-vlm.gguf", "/models/vlm/mmproj/mmproj-vlm.gguf", True, "bind"),
        ("/srv/models/small.gguf", "/models/vlm/draft/small.gguf", True, "bind"),
        ("/srv/models/lora-sea.gguf", "/models/vlm/adapters/sea.gguf", True, "bind"),
        ("/srv/models/lora-sky.gguf", "/models/vlm/adapters/sky.gguf", True, "bind"),
    ]
    mounts = create_kwargs(spec, "default", "modelctl")["mounts"]
    assert [(m["Target"], m["ReadOnly"]) for m in mounts] == [(m.target, True) for m in spec.mounts]


def test_the_draft_runs_where_the_model_runs() -> None:
    assert after(build_spec(gguf_model(gpus=1), 0, ("3",)).command, "-ngld") == "999"
    assert after(build_spec(gguf_model(), 0).command, "-ngld") == "0"


def test_adapter_ids_follow_the_manifest_order_and_the_flags() -> None:
    model = gguf_model(adapters=("zeta", "alpha", "mid"))
    command = build_spec(model, 0).command
    flagged = [command[i + 1] for i, arg in enumerate(command) if arg == "--lora-scaled"]
    assert flagged == [f"/models/vlm/adapters/{n}.gguf:0" for n in ("zeta", "alpha", "mid")]
    assert adapter_ids(model.files) == {"zeta": 0, "alpha": 1, "mid": 2}
    for name, k in adapter_ids(model.files).items():
        assert flagged[k].startswith(f"/models/vlm/adapters/{name}.gguf:")


def test_a_model_without_files_beside_it_gets_no_such_flags() -> None:
    model = loaded(ROOT / "x.gguf", ExtraFiles(), model="x.gguf", name="x")
    spec = build_spec(model, 0)
    assert not {"--mmproj", "-md", "--lora-scaled", "-ngld"} & set(spec.command)
    assert len(spec.mounts) == 1


def test_a_split_gguf_draft_brings_its_shards_beside_it(tmp_path: Path) -> None:
    names = [f"draft-{k:05d}-of-00003.gguf" for k in (1, 2, 3)]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    model = loaded(
        ROOT / "x.gguf",
        ExtraFiles(draft=tmp_path / names[0]),
        model="x.gguf",
        name="x",
        draft=f"{tmp_path}/{names[0]}",
    )
    spec = build_spec(model, 0)
    assert after(spec.command, "-md") == f"/models/x/draft/{names[0]}"
    assert [(m.source, m.target) for m in spec.mounts[1:]] == [
        (str(tmp_path / n), f"/models/x/draft/{n}") for n in names
    ]


def peft(folder: Path, rank: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": rank}))
    (folder / "adapter_model.safetensors").write_bytes(b"")
    return folder


def vllm_model(tmp_path: Path, ranks: tuple[int, ...], *, draft: bool = True) -> LoadedModel:
    weights = tmp_path / "smol"
    weights.mkdir()
    adapters = tuple(AdapterFile(f"a{k}", peft(tmp_path / f"lora-{k}", r)) for k, r in enumerate(ranks))
    drafter = tmp_path / "tiny"
    drafter.mkdir()
    return loaded(
        weights,
        ExtraFiles(draft=drafter if draft else None, adapters=adapters),
        model="smol",
        name="smol",
        engine="vllm",
        draft="tiny" if draft else None,
        adapters=[{"name": a.name, "path": a.path.name} for a in adapters],
        args=["--dtype", "bfloat16"],
    )


def test_vllm_serves_peft_adapters_by_name_and_drafts_with_a_folder(tmp_path: Path) -> None:
    spec = build_spec(vllm_model(tmp_path, (8, 12)), 0)
    tail = spec.command[spec.command.index("--enforce-eager") + 1 :]
    assert tail == (
        "--speculative-config",
        '{"model":"/models/smol/draft/tiny","num_speculative_tokens":5}',
        "--enable-lora",
        "--max-lora-rank",
        "16",
        "--max-loras",
        "2",
        "--lora-modules",
        "a0=/models/smol/adapters/a0",
        "a1=/models/smol/adapters/a1",
        "--dtype",
        "bfloat16",
    )
    assert [(m.source, m.target, m.read_only) for m in spec.mounts] == [
        (str(tmp_path / "smol"), "/models/smol/smol", True),
        (str(tmp_path / "tiny"), "/models/smol/draft/tiny", True),
        (str(tmp_path / "lora-0"), "/models/smol/adapters/a0", True),
        (str(tmp_path / "lora-1"), "/models/smol/adapters/a1", True),
    ]


def test_the_max_lora_rank_is_the_largest_rounded_up_to_vllm_s_choices(tmp_path: Path) -> None:
    command = build_spec(vllm_model(tmp_path, (9, 4, 16), draft=False), 0).command
    assert (after(command, "--max-lora-rank"), after(command, "--max-loras")) == ("16", "3")


def test_a_rank_above_vllm_s_largest_is_refused_naming_the_adapter(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=r"model smol: adapter a1: .*LoRA rank 1024 is above 512"):
        build_spec(vllm_model(tmp_path, (8, 1024)), 0)


def test_adapters_not_on_this_machine_leave_vllm_s_default_rank(tmp_path: Path) -> None:
    """A Kubernetes rendering without --model-root: the adapters are paths on the cluster."""
    model = vllm_model(tmp_path, (8,), draft=False)
    elsewhere = (AdapterFile("a0", Path("/model-root/lora-0")),)
    command = build_spec(dataclasses.replace(model, files=ExtraFiles(adapters=elsewhere)), 0).command
    assert "--max-lora-rank" not in command
    assert after(command, "--lora-modules") == "a0=/models/smol/adapters/a0"


def test_an_adapter_whose_rank_cannot_be_read_is_named(tmp_path: Path) -> None:
    model = vllm_model(tmp_path, (8,), draft=False)
    (model.files.adapters[0].path / "adapter_config.json").unlink()
    with pytest.raises(EngineError, match=r"model smol: adapter a0: .*no adapter_config\.json"):
        build_spec(model, 0)


def test_files_named_but_not_checked_are_refused() -> None:
    unchecked = loaded(
        ROOT / "x.gguf",
        ExtraFiles(),
        model="x.gguf",
        name="x",
        adapters=[{"name": "sea", "path": "sea.gguf"}],
        mmproj="p.gguf",
    )
    with pytest.raises(EngineError, match="model x: mmproj, adapters not checked against the model roots"):
        build_spec(unchecked, 0)


def test_files_beside_unchecked_weights_are_refused() -> None:
    model = loaded(None, ExtraFiles(mmproj=ROOT / "p.gguf"), model="x.gguf", name="x", mmproj="p.gguf")
    with pytest.raises(EngineError, match="weights were not checked"):
        build_spec(model, 0)


def test_hub_weights_may_have_checked_files_beside_them() -> None:
    adapters = (AdapterFile("sea", ROOT / "sea.gguf"),)
    model = loaded(
        None,
        ExtraFiles(adapters=adapters),
        model="hf://org/repo:Q4_K_M",
        name="x",
        adapters=[{"name": "sea", "path": "sea.gguf"}],
    )
    spec = build_spec(model, 0)
    assert after(spec.command, "--lora-scaled") == "/models/x/adapters/sea.gguf:0"
    assert [m.target for m in spec.mounts] == ["/cache", "/models/x/adapters/sea.gguf"]


def test_weights_named_like_a_fixed_place_cannot_hide_a_file(tmp_path: Path) -> None:
    (tmp_path / "draft").mkdir()
    drafter = tmp_path / "other"
    drafter.mkdir()
    model = loaded(
        tmp_path / "draft", ExtraFiles(draft=drafter), model="draft", name="m", engine="vllm", draft="other"
    )
    with pytest.raises(EngineError, match=r"would appear at /models/m/draft/other, inside .*draft"):
        build_spec(model, 0)


def test_two_mounts_at_one_place_are_refused() -> None:
    """A guard: the manifest already refuses two adapters of one name."""
    model = loaded(ROOT / "x.gguf", ExtraFiles(), model="x.gguf", name="x")
    mounts = (
        Mount("/a.gguf", "/models/x/adapters/sea.gguf"),
        Mount("/b.gguf", "/models/x/adapters/sea.gguf"),
    )
    with pytest.raises(
        EngineError, match=r"/b\.gguf and /a\.gguf would both appear at /models/x/adapters/sea\.gguf"
    ):
        check_targets(model, mounts)
