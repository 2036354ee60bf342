"""The GPU check run on a lent GPU machine (``scripts/gpu-check.py`` is its command line): one
module per part, in the order ``main`` runs them, and what they share in ``common``.

A package beside the script rather than inside ``controller``: the lent machine runs it from a copy
of the working tree, without Docker, network or perhaps pydantic, and it imports only the parts of
``controller`` it checks. Nothing here is imported by the controller.
"""
