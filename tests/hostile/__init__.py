"""Hostile input at every boundary (issue 16): property-based suites per boundary, and a real stack."""
