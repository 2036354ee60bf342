"""Admission and balancing: which replica takes a request, now or after a bounded wait.

Per-model wait queues with their bounds (429/503), the balancer's choice among ready replicas (least
outstanding, prefix affinity over a hash ring) and the demand per model the controller scales on.
Pure over the endpoint table and the clock; no HTTP beyond the refusals it raises.
"""
