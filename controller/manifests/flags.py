"""Engine flags modelctl sets itself, and whether a manifest's ``args`` entry would set one, matched
the way each engine's own parser reads its command line.

An ``args`` entry that repeats such a flag would silently fight the controller (both engines keep
the last value, and manifest args come last): a second port, another served name, more GPUs than
placement gave, an API key the gateway does not send. A plain string comparison is not enough,
because the engines accept more spellings than the one in their ``--help``:

- **vLLM** (``FlexibleArgumentParser``, an ``argparse.ArgumentParser`` with ``allow_abbrev`` left
  on): ``--gpu_memory_utilization`` is ``--gpu-memory-utilization`` (underscores in a ``--`` name,
  up to its first ``.``, become dashes), ``--flag=value`` is ``--flag value``, an unambiguous prefix
  (``--gpu-mem``) is the whole flag, and a short flag takes its value attached (``-tp2``,
  ``-tp=2``) or is abbreviated itself (``-t`` for ``-tp`` when nothing else starts with ``-t``).
- **llama.cpp** (common/arg.cpp, ``common_params_parse_ex``): a ``--`` argument has every ``_``
  replaced by ``-`` and must then equal a known name exactly; short forms (``-m``, ``-np``) are exact;
  there are no ``=`` forms and no prefixes. ``--x=v`` is refused too: the engine would not start.

A prefix that is ambiguous in the engine (``--max``) is refused as well: the engine would refuse it
at start anyway, and refusing it here needs no list of every flag the engine has.
"""

from __future__ import annotations

from controller.manifests.engines import EngineName

# Each option modelctl owns, as the engine spells it (every alias of one option on one line).
LLAMACPP_RESERVED: tuple[tuple[str, ...], ...] = (
    ("-m", "--model"),
    ("-mu", "--model-url"),
    ("-hf", "-hfr", "--hf-repo"),
    ("-hff", "--hf-file"),
    ("-dr", "--docker-repo"),
    ("--models-dir",),  # router mode: the server would serve other models than the manifest's
    ("--models-preset",),
    ("--host",),
    ("--port",),
    ("--api-prefix",),  # moves /health and /v1 away from where the gateway and probes look
    ("--ssl-key-file",),  # HTTPS: the gateway and the probes speak HTTP to replicas
    ("--ssl-cert-file",),
    ("--api-key",),  # the gateway would get 401 from its own replica
    ("--api-key-file",),
    ("-a", "--alias"),
    ("-c", "--ctx-size"),
    ("-np", "--parallel"),
    ("-ngl", "--gpu-layers", "--n-gpu-layers"),
    ("--threads-http",),
    ("--no-webui", "--webui", "--no-ui", "--ui"),
    ("--no-slots", "--slots"),  # draining reads GET /slots
    # From the files beside the weights (``mmproj``, ``draft``, ``adapters``): each is resolved
    # under the model roots, mounted and counted in the estimate only when the manifest names it.
    ("-mm", "--mmproj"),
    ("-mmu", "--mmproj-url"),  # another projector, downloaded past the model roots
    ("--spec-draft-model", "-md", "--model-draft"),
    ("--spec-draft-hf", "-hfd", "-hfrd", "--hf-repo-draft"),
    ("--spec-draft-ngl", "-ngld", "--gpu-layers-draft", "--n-gpu-layers-draft"),  # placement's
    ("--spec-type",),
    ("--lora",),
    ("--lora-scaled",),  # modelctl starts every adapter at scale 0; a request selects its own
    ("--embedding", "--embeddings"),  # from ``task``: the gateway routes by it too
    ("--rerank", "--reranking"),
)

VLLM_RESERVED: tuple[tuple[str, ...], ...] = (
    ("--model",),
    ("--host",),
    ("--port",),
    ("--uds",),  # a Unix socket instead of the port
    ("--ssl-keyfile",),
    ("--ssl-certfile",),
    ("--api-key",),
    ("--served-model-name",),
    ("--tensor-parallel-size", "-tp"),
    ("--pipeline-parallel-size", "-pp"),  # more GPUs than placement gave the replica
    ("--data-parallel-size", "-dp"),
    ("--max-num-seqs",),
    ("--max-model-len",),
    ("--gpu-memory-utilization",),
    ("--config",),  # reads any of the above from a YAML file, out of this check's sight
    ("--headless",),  # no API server at all
    ("--enable-lora",),  # from ``adapters``: the slots, ranks and names follow from the files
    ("--lora-modules",),
    ("--max-lora-rank",),
    ("--max-loras",),
    ("--speculative-config",),  # from ``draft``
    # Tool calls and reasoning: the manifest's tools / tool_parser / reasoning_parser fields.
    ("--enable-auto-tool-choice", "--no-enable-auto-tool-choice"),
    ("--tool-call-parser",),
    ("--reasoning-parser",),
    ("--runner",),  # from ``task``: pooling for embed and rerank
    ("--convert",),
)

# The manifest field a reserved flag comes from, where it is not modelctl's own business (ports,
# placement) but the user's choice written another way: the error says which field to use.
FIELD_OF_FLAG = {
    "--mmproj": "mmproj",
    "--mmproj-url": "mmproj",
    "--spec-draft-model": "draft",
    "--spec-draft-hf": "draft",
    "--n-gpu-layers-draft": "draft",
    "--spec-type": "draft",
    "--speculative-config": "draft",
    **dict.fromkeys(
        ("--lora", "--lora-scaled", "--enable-lora", "--lora-modules", "--max-lora-rank", "--max-loras"),
        "adapters",
    ),
    "--no-enable-auto-tool-choice": "tools",  # the longest spelling names the option
    "--tool-call-parser": "tool_parser",
    "--reasoning-parser": "reasoning_parser",
    **dict.fromkeys(("--embeddings", "--reranking", "--runner", "--convert"), "task"),
}


def reserved_flag(engine: EngineName, arg: str) -> str | None:
    """The reserved flag (its longest spelling) that ``arg`` would set in ``engine``, or None."""
    table = LLAMACPP_RESERVED if engine == "llamacpp" else VLLM_RESERVED
    match = _llamacpp_sets if engine == "llamacpp" else _vllm_sets
    for spellings in table:
        if any(match(arg, flag) for flag in spellings):
            return max(spellings, key=len)
    return None


def _llamacpp_sets(arg: str, flag: str) -> bool:
    if arg.startswith("--"):
        arg = arg.replace("_", "-")
    return arg.split("=", 1)[0] == flag


def _vllm_sets(arg: str, flag: str) -> bool:
    if arg.startswith("--"):
        name = vllm_long_name(arg)
        # exact, or an abbreviation argparse would expand (at least one letter after the dashes)
        return flag.startswith("--") and len(name) > 2 and flag.startswith(name)
    if arg.startswith("-") and len(arg) > 1 and not flag.startswith("--"):
        # exact, attached value (-tp2, -tp=2), or an abbreviation of the short flag (-t)
        return arg.startswith(flag) or flag.startswith(arg.split("=", 1)[0])
    return False


def vllm_long_name(arg: str) -> str:
    """A ``--`` argument's option name as vLLM's parser sees it: before ``=`` and the first ``.``,
    underscores as dashes (``--Gpu_memory.x=1`` -> ``--Gpu-memory``; argparse is case-sensitive)."""
    name = arg.split("=", 1)[0].split(".", 1)[0]
    return "--" + name[2:].replace("_", "-")
