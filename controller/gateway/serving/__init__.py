"""Serving: the gateway as a process of its own.

The server (follows the controller, listens with bounded connections and timeouts), worker processes
sharing the port (SO_REUSEPORT), the event loop and GC tuning of a serving process, and the access
log. Nothing here is on a request's path.
"""
