"""Shared test setup: warnings are errors (pyproject), Docker-backed fixtures live in their folders."""
