"""Forwarding: one admitted request to a replica and its answer back to the client.

The HTTP/1.1 client to replicas, the retries before the first byte, the relay of whole answers and
streams (with their deadlines, the mends some APIs need and the usage they carry), and which headers
cross the gateway each way. It knows nothing of the APIs' shapes beyond what a stream's end looks like.
"""
