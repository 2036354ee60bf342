"""Hostile input at every boundary (issue 16): the gateway, the controller API, manifests."""
