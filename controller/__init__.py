"""modelctl: declarative LLM inference servers behind one OpenAI-compatible endpoint.

The package is split the way the system is: a control plane (manifests, engines, the Docker runtime,
the reconciler, the controller's small HTTP API) and a data plane (``controller.gateway``) that only
knows the endpoint table in ``controller.endpoints.table``. The gateway never imports Docker.
"""

__version__ = "0.1.0"
