"""Kubernetes: the same manifests rendered to plain objects for a cluster (docs/kubernetes.md).

``names`` (object names and labels), ``engine`` (one model -> Deployment, headless Service, optionally
an InferencePool; the container comes from ``controller.engines.build_spec``, the one source of truth
for flags, health path, shm and env), ``gateway`` (the gateway's Deployment, Service, PDB and the
ConfigMap its DNS table source reads), ``notes`` (manifest fields that mean nothing on a cluster, one
line each) and ``render`` (loading, deterministic YAML files, kustomization.yaml). Pure: nothing here
talks to a cluster or to Docker; an operator reconciling through the API server would apply these
same objects (docs/kubernetes.md).
"""
