"""Telemetry: what the gateway counts and keeps about the requests it answered.

Prometheus metrics in an app-owned registry (plain dicts on the request path, families at scrape
time), the last requests per model (never a body), and the peer workers' figures merged at scrape
time. Recording costs the request path a few dict updates; rendering happens when scraped.
"""
