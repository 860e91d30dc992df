"""The model registry's reads and writes over a bare moto world: one cache per process, which
a change made here drops at once (register, retire, remove) and a change made elsewhere
reaches only after the cache's time."""

from __future__ import annotations

import pytest

from batch_core.errors import ConflictError
from batch_core.model_registry import ModelInUseError
from batch_core.records import ServedModel
from tests.conftest import MODEL
from tests.stage_world import StageWorld


def test_a_change_made_here_is_read_at_once(world: StageWorld) -> None:
    registry = world.stages.registry
    assert registry.served("fleet-model") is None  # read, and cached
    assert registry.served_model_names() == [MODEL]

    world.register("fleet-model", fleet="f1", context_length=4096)

    served = registry.served("fleet-model")
    assert served is not None and served.context_length == 4096
    assert registry.served_model_names() == [MODEL, "fleet-model"]

    assert registry.retire("fleet-model")
    assert registry.served_model_names() == [MODEL]  # refused for new batches at once
    retiring = registry.served("fleet-model")
    assert retiring is not None and retiring.status == "retiring"
    assert retiring.retired_at == int(world.clock())


def test_a_change_made_elsewhere_waits_for_the_cache(world: StageWorld) -> None:
    registry = world.stages.registry
    assert registry.served("elsewhere") is None
    url = world.sqs.create_queue(QueueName="stage-model-f2-normal")["QueueUrl"]
    world.table.models.put_model(ServedModel(name="elsewhere", queue_url=url, fleet="f2"))

    assert registry.served("elsewhere") is None  # another process wrote it: still cached
    registry.forget()
    assert registry.served("elsewhere") is not None


def test_remove_waits_for_unfinished_batches_then_drops_the_model(world: StageWorld) -> None:
    world.register("fleet-model", fleet="f1")
    registry = world.stages.registry
    world.store_batch("batch_m", "in_progress", model="fleet-model")
    registry.retire("fleet-model")
    world.clock.advance(61)  # every process's cache has seen it retiring: no wait

    with pytest.raises(ModelInUseError, match="batch_m"):
        registry.remove("fleet-model")
    assert registry.served("fleet-model") is not None

    world.table.batches.transition("batch_m", to_status="cancelling", from_statuses=["in_progress"])
    world.table.batches.transition("batch_m", to_status="cancelled", from_statuses=["cancelling"])
    assert not registry.remove("fleet-model", fleet="another")  # not its fleet's to remove
    assert registry.remove("fleet-model", fleet="f1")

    assert registry.served("fleet-model") is None
    assert world.table.models.get_model("fleet-model") is None


def test_a_fleet_may_not_take_over_another_fleets_model(world: StageWorld) -> None:
    world.register("fleet-model", fleet="f1")

    with pytest.raises(ConflictError, match="registered by fleet 'f1'"):
        world.register("fleet-model", fleet="f2")
    served = world.stages.registry.served("fleet-model")
    assert served is not None and served.fleet == "f1"
