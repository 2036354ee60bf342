"""The endpoint table: the contract between the control plane and the data plane.

``table`` is the plain data (models, aliases, ready replicas) the gateway routes by; ``store``
holds the controller's current table and answers the gateway's long polls. ``demand`` is what the
gateway reports back (parsed with bounds), ``refusal`` the JSON the controller API answers a body it
refuses with. The gateway imports ``table`` and ``demand`` only.
"""
