"""What a rendering may choose beside the manifests: one frozen dataclass, each field with its default
and why (``modelctl render kubernetes`` flags map onto it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class RenderOptions:
    """Cluster-side choices the manifests do not (and should not) say."""

    # Where the objects go; None: the namespace `kubectl apply -k` / the GitOps tool uses.
    # Flag --namespace.
    namespace: str | None = None
    # The io.modelctl.instance label, as the Docker controller's MODELCTL_INSTANCE.
    instance: str = "default"
    # The PersistentVolumeClaim holding the model root (the same files as MODELCTL_MODEL_ROOT on
    # Docker, mounted read-only). Yours to create and fill; not rendered. Flag --models-claim.
    models_claim: str = "modelctl-models"
    # Opt-in instead of the claim: weights from this folder on every node (hostPath), for single-node
    # clusters and `podman kube play`. Flag --host-model-root.
    host_model_root: str | None = None
    # The PVC hub weights download into (the modelctl-hub-cache volume on Docker); rendered when a
    # model downloads from the hub: ReadWriteMany, since every replica shares it. Flag --cache-size.
    cache_claim: str = "modelctl-hub-cache"
    cache_size: str = "100Gi"
    # The Secret that `${NAME}` env values refer to (key NAME); yours to create, never rendered, so
    # no secret value is ever in the rendered files. Flag --secret.
    secret: str = "modelctl-secrets"
    # Cores per CPU replica (the Docker controller splits the host's cores; here the scheduler
    # reserves these): requests = limits, and llama-server gets as many threads. Flag --cpus.
    cpus: int = 2
    # The controller/gateway image (the Docker stack's own); push it where the cluster pulls from.
    # Flag --gateway-image.
    gateway_image: str = "modelctl/modelctl:local"
    # Two gateways, so one can be drained (PodDisruptionBudget minAvailable 1).
    gateway_replicas: int = 2
    # Also an InferencePool (Gateway API Inference Extension) per vLLM model. Flag --inference-pool.
    inference_pool: bool = False
    # The endpoint picker (llm-d's EPP) each InferencePool names; yours to deploy. Flag --epp-port.
    epp_port: int = 9002
