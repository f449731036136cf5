"""The audit's inventory: what the watches delivered wins over an older seed listing."""

from __future__ import annotations

from mlgate.controller.inventory import Inventory
from tests.unit.factories import deployment


def names(inventory: Inventory) -> list[str]:
    return sorted(item["metadata"]["name"] for item in inventory.items())


def test_watch_events_win_over_the_seed_listing() -> None:
    inventory = Inventory()
    old = deployment("changed", image="nginx")
    new = deployment("changed")
    inventory.observe(None, new)
    inventory.observe("DELETED", deployment("deleted"))
    assert not inventory.seeded
    inventory.seed([old, deployment("deleted"), deployment("listed")])
    assert inventory.seeded
    assert names(inventory) == ["changed", "listed"]
    (changed,) = [i for i in inventory.items() if i["metadata"]["name"] == "changed"]
    assert changed["spec"] == new["spec"]


def test_controlled_objects_status_and_managed_fields_are_not_kept() -> None:
    inventory = Inventory()
    owned = deployment("owned")
    owned["metadata"]["ownerReferences"] = [{"kind": "X", "name": "x", "controller": True}]
    kept = deployment("kept")
    kept["status"] = {"replicas": 2}
    kept["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    inventory.seed([])
    inventory.observe("ADDED", owned)
    inventory.observe("ADDED", kept)
    (item,) = inventory.items()
    assert item["metadata"]["name"] == "kept"
    assert "status" not in item and "managedFields" not in item["metadata"]
    # An object that gains a controller leaves; deleting it again is harmless.
    inventory.observe("MODIFIED", {**kept, "metadata": owned["metadata"] | {"name": "kept"}})
    inventory.observe("DELETED", kept)
    assert inventory.items() == []
