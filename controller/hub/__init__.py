"""Hub pulls: the controller downloads ``hf://`` weights into the hub cache before a replica
starts, so an engine's load timeout measures loading, not downloading, and progress can be shown.

    select   which of a repo's files an engine would fetch (pure: llama.cpp's -hf rules, vLLM's)
    cache    the hub cache on disk: huggingface_hub's layout, and a record per pull that says
             which files a model needs, so "is it cached?" needs no network
    pull     plans (the repo's listing, sizes, the disk check) and downloads with huggingface_hub

Nothing here talks to Docker; the reconciler (``reconcile.pulls``) runs pulls in the background and
``modelctl pull`` runs them ahead of time.
"""
