"""What the controller measures, for its /metrics and the console: the control plane's Prometheus
metrics (``metrics``, from the loop's published report), the gateway's figures scraped over the
internal network into 15-minute series and last requests (``series``), and energy per GPU
attributed to replicas (``energy``). It sits above the reconciler (it reads its published report)
and below the API (which serves it).
"""
