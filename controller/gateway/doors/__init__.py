"""Front doors: the APIs clients speak, each a thin adapter over one request pipeline.

OpenAI's (and the Anthropic Messages and Responses paths, forwarded as they are) and Ollama's
(translated to the replicas' OpenAI endpoints and back). A door parses and translates a request in and
its answer out; the pipeline does everything else once for all of them: the body under its deadline,
the model, the key's use, admission, forwarding, the relay and the outcome.
"""
