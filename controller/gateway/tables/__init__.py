"""Table sources: where the gateway's endpoint table comes from.

The controller's published table (followed over HTTP), a Kubernetes headless Service's DNS records,
or a fixed table (tests, an in-process controller). Every source answers ``current()`` at once: the
request path never waits on a source.
"""
