"""The endpoint table: the contract between the control plane and the data plane.

``table`` is the plain data (models, aliases, ready replicas) the gateway routes by; ``store``
holds the controller's current table and answers the gateway's long polls. The gateway imports
``table`` only.
"""
