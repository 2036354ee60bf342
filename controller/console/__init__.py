"""What the console shows, built beside the planes (the API serves it: ``controller.api``).

Gateway metrics scraped over the internal network into 15-minute series, the last requests per
model, energy per GPU attributed to replicas, all read by the page through the controller's API.
It sits above the reconciler (it reads its published report) and below the API (which serves it).
"""
