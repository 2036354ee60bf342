"""Which APIs serve which task: a request is checked against its model's task before it is forwarded.

A chat request to an embedding model fails deep in the engine (llama-server started with
``--embeddings`` answers 501 or a confusing error; vLLM's pooling runner 404), and an embeddings
request to a generator gets vectors nobody trained. Here it is one 400 naming the model and its
task, in the shape of the API the client speaks (the pipeline answers ``Refusal`` so)::

    model smollm2 is served for generate; /v1/embeddings needs a model with task: embed

``TASK_OF_PATH`` is the table, by the path the client sent. Audio (transcriptions, translations)
is a generate model's (vLLM serves Whisper as a generator with a transcription API); llama-server
has no audio API at all, so a llama.cpp model is refused there whatever its task.
"""

from __future__ import annotations

from controller.endpoints.table import EMBED, GENERATE, LLAMACPP, RERANK, ModelEndpoints
from controller.gateway import errors
from controller.gateway.errors import Refusal

AUDIO_PATHS = frozenset({"/v1/audio/transcriptions", "/v1/audio/translations"})
# The tasks a model may have for a request to each path (a path not listed: not checked here).
TASK_OF_PATH: dict[str, frozenset[str]] = {
    **dict.fromkeys(
        (
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/responses",
            "/v1/messages",
            "/v1/messages/count_tokens",
            "/api/chat",
            "/api/generate",
            *AUDIO_PATHS,
        ),
        frozenset({GENERATE}),
    ),
    **dict.fromkeys(("/v1/embeddings", "/api/embed", "/api/embeddings"), frozenset({EMBED})),
    **dict.fromkeys(("/v1/rerank", "/rerank"), frozenset({RERANK})),
    "/v1/score": frozenset({EMBED, RERANK}),  # vLLM scores pairs with either (cosine, or the classifier)
}


def check(path: str, entry: ModelEndpoints, name: str | None = None) -> None:
    """Raise ``Refusal`` (400) when ``entry``'s task is not one ``path`` serves, or ``path`` is an
    audio API and the model's engine has none. ``name``: what the request named (an adapter's name
    for one of ``entry``'s adapters), for the message; default the model's."""
    wanted = TASK_OF_PATH.get(path)
    if wanted is None:
        return
    if entry.task not in wanted:
        raise mismatch(path, entry, wanted, name or entry.name)
    if path in AUDIO_PATHS and entry.engine == LLAMACPP:
        raise errors.bad_request(
            f"model {entry.name} is served by llama.cpp, and llama.cpp serves no transcription API; "
            f"{path} needs a vLLM model that takes audio (Whisper)",
            code="unsupported_task",
        )


def mismatch(path: str, entry: ModelEndpoints, wanted: frozenset[str], name: str) -> Refusal:
    """The 400 naming the model (or adapter), its task and the task(s) ``path`` needs."""
    needs = " or ".join(f"task: {task}" for task in sorted(wanted))
    return errors.bad_request(
        f"model {name} is served for {entry.task}; {path} needs a model with {needs}",
        code="unsupported_task",
    )


class ReplicaPath:
    """A request the replica serves at another path (``Translation``): its answer is read whole
    (at most ``upstream.MAX_WHOLE_ANSWER_BYTES``) and passed on as the replica gave it."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def stream(self, status: int, content_type: str) -> None:
        return None


# Paths clients use that the engines serve under another name: the bare /rerank of Jina's and
# Cohere's clients (and llama-swap's) is /v1/rerank on llama-server and vLLM.
REPLICA_PATHS = {"/rerank": ReplicaPath("/v1/rerank")}
