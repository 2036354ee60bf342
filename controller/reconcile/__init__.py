"""The reconciler: makes the running containers match the manifests, level-based.

A pass reads (manifests, containers, GPUs, health, demand), decides in one pure function over
that snapshot (``decide``), executes the decision (``loop``), and publishes one immutable report
for every reader (``report``); the other modules are the parts those steps are made of, each
saying in its docstring what it is for.
"""
