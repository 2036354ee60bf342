"""The endpoint table names engines and tasks as the manifests do: the controller writes the
manifest's values, the gateway compares them with the table's constants (it may not import the
manifests), so both lists must be one."""

from __future__ import annotations

from controller.endpoints import table
from controller.manifests import engines, values


def test_engines_and_tasks_are_the_manifests() -> None:
    assert {table.LLAMACPP, table.VLLM} == set(engines.ENGINE_NAMES)
    assert (table.LLAMACPP, table.VLLM) == (engines.LLAMACPP, engines.VLLM)
    assert table.TASKS == values.TASKS
