"""Adding, retiring and removing served models: what the worker-fleet template's custom
resource (`handlers.model_registry`) and `batchctl models` do to the registry (`table_models`).

A model is removed only once nothing can still need it: it is retired first (new batches for
it are refused), every process's cached registry is given time to see that, and the removal
is refused while any batch for it has not ended."""

from __future__ import annotations

import time
from collections.abc import Callable

from batch_core.errors import ConflictError
from batch_core.records import ServedModel
from batch_core.repository import BatchRepository
from batch_core.service_base import MODEL_REGISTRY_SECONDS


class ModelInUseError(ConflictError):
    """Batches for the model have not ended: it stays (retiring) until they do."""


class ModelRegistry:
    """The registry's changes, over the table."""

    def __init__(
        self,
        repository: BatchRepository,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.repository = repository
        self._clock = clock
        self._sleep = sleep

    def register(self, model: ServedModel) -> ServedModel:
        """Add or change a model; its first registration's time is kept, and retiring it here
        (status `retiring`) records when."""
        now = int(self._clock())
        current = self.repository.get_model(model.name)
        created = current.created_at if current and current.created_at else now
        retired_at = None
        if model.status == "retiring":
            retired_at = current.retired_at if current and current.retired_at else now
        stored = model.model_copy(update={"created_at": created, "retired_at": retired_at})
        self.repository.put_model(stored)
        return stored

    def retire(self, name: str) -> bool:
        """Refuse new batches for the model; running ones finish. False if unknown."""
        return self.repository.retire_model(name, int(self._clock()))

    def unfinished_batches(self, name: str) -> list[str]:
        """The batches for the model that have not ended (every active batch is read)."""
        active = self.repository.active_batches(int(self._clock()))
        return [batch.id for batch in active if batch.model == name]

    def remove(self, name: str) -> bool:
        """Retire the model, wait until every process's registry knows (at most a minute
        after it began retiring), then delete it; False if it was not registered.

        Raises ModelInUseError while batches for it have not ended (it stays retiring)."""
        if not self.retire(name):
            return False
        model = self.repository.get_model(name)
        retired_at = model.retired_at if model and model.retired_at else int(self._clock())
        wait = retired_at + MODEL_REGISTRY_SECONDS - self._clock()
        if wait > 0:
            self._sleep(wait)  # an intake that read the registry just before still may start one
        unfinished = self.unfinished_batches(name)
        if unfinished:
            listed = ", ".join(unfinished[:5]) + (" ..." if len(unfinished) > 5 else "")
            raise ModelInUseError(
                f"{len(unfinished)} batches for model {name!r} have not ended ({listed}). "
                "It is retiring: new batches for it are refused. Remove it again once they end."
            )
        self.repository.delete_model(name)
        return True
