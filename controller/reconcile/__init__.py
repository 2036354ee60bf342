"""The reconciler: makes the running containers match the manifests, level-based.

``desired`` turns manifests and placement into the specs wanted; ``plan`` compares them with
what runs (pure: create / delete / keep, one roll at a time); ``loop`` executes passes and
publishes ready replicas to the endpoint store; ``lifecycle`` (backoff, health timing),
``failures`` (one-line reasons from engine logs), ``health`` (readiness probes), ``drain``
(in-flight work before a stop), ``watch`` (what wakes a pass) and ``status`` (rows for
``modelctl status``) are its parts.
"""
