"""The served models' registry (`table_models`): reading it (where a batch's shards go, which
models validation accepts), with one cache per process, and adding, retiring and removing
models: what the worker-fleet template's custom resource (`handlers.model_registry`) and
`batchctl models` do. A change made here drops this process's cache.

A model is removed only once nothing can still need it: it is retired first (new batches for
it are refused), every process's cached registry is given time to see that, and the removal
is refused while any batch for it has not ended, or is still validating and may turn out to
be for it.

Whoever can deploy a worker-fleet stack writes here, and every tenant's batches are routed by
what is written: a registration is held to `RegistryRules` (a safe name, queues of this
stack's fleets only, never the stack's own model nor another fleet's)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from batch_core.errors import ConflictError, InvalidRequestError
from batch_core.records import ServedModel
from batch_core.repository import BatchRepository
from batch_core.settings import Settings

MODEL_REGISTRY_SECONDS = 60.0
"""How long a process keeps the model registry it read."""
MAX_NAME_CHARS = 256
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*(?:/[A-Za-z0-9][A-Za-z0-9._:-]*)*")
"""ASCII letters, digits and `._:-`, in segments joined by single `/` (hub ids such as
`Qwen/Qwen2.5-7B-Instruct`, vLLM's default served name; OpenAI's `ft:...:...` names), each
segment starting with a letter or digit. No `#` (the table's key separator), no whitespace
or control characters (logs, every tenant's `model_not_found` message, CloudWatch dimension
values), no `.`/`..` segments, and no `//`: a URI such as `s3://bucket/prefix/` (a fleet's
default name is its Model) would show every tenant where the weights are."""
MAX_QUEUE_NAME_CHARS = 80
"""SQS's limit on a queue name."""
_QUEUE_NAME_CHARS = "[A-Za-z0-9_-]"


class ModelInUseError(ConflictError):
    """Batches for the model have not ended: it stays (retiring) until they do."""


def check_name(name: str) -> None:
    if len(name) > MAX_NAME_CHARS or not SAFE_NAME.fullmatch(name):
        shown = ascii(name[:80]) + ("..." if len(name) > 80 else "")
        raise InvalidRequestError(
            f"The model name {shown} is not allowed: up to {MAX_NAME_CHARS} ASCII letters, "
            "digits and '._:-', in segments joined by single '/', each starting with a letter "
            "or digit (e.g. llama-3.1-8b or Qwen/Qwen2.5-7B-Instruct).",
            param="name",
        )


@dataclass(frozen=True)
class RegistryRules:
    """What a registration must respect besides a safe name: the stack's own models (routed
    to its own queues, not to be taken over) and where a model's shard queues may be."""

    own_models: frozenset[str] = frozenset()
    """The main stack's served models (SERVED_MODELS)."""
    queue_base: str = ""
    """`<endpoint>/<account>` of the stack's own queue URLs: a fleet's queues are in the same
    account and region, written the same way (CloudFormation's Ref of a queue). Empty: any."""
    stack_name: str = ""
    """Fleet queues are named `<stack>-model-*` (what the stack's functions may send to).
    Empty (unknown): any `*-model-*` name."""

    @classmethod
    def of(cls, settings: Settings) -> RegistryRules:
        return cls(
            own_models=frozenset(settings.served_models),
            queue_base=settings.shard_queue_url.rsplit("/", 1)[0],
            stack_name=settings.stack_name,
        )

    @property
    def queue_prefix(self) -> str:
        stack = self.stack_name or "<stack>"
        return f"{self.queue_base}/{stack}-model-"

    def check(self, model: ServedModel) -> None:
        check_name(model.name)
        if model.name in self.own_models:
            raise ConflictError(
                f"{model.name!r} is the stack's own model (its ServedModels or WorkerModel): "
                "a fleet may not take over its routing. Give the fleet another ServedModelName.",
                param="name",
            )
        queues = {
            "queue_url": model.queue_url,
            "urgent_queue_url": model.urgent_queue_url,
            "bulk_queue_url": model.bulk_queue_url,
        }
        for field, url in queues.items():
            if (field == "queue_url" or url) and not self._own_fleet_queue(url):
                raise InvalidRequestError(
                    f"{url[:200]!r} is not a shard queue of this stack's fleets: a queue URL "
                    f"must be {self.queue_prefix}<fleet>-<tier> (this account and region, "
                    f"a name of {MAX_QUEUE_NAME_CHARS} characters at most).",
                    param=field,
                )

    def _own_fleet_queue(self, url: str) -> bool:
        if not self.queue_base:
            return True
        base, _, name = url.rpartition("/")
        if base != self.queue_base or len(name) > MAX_QUEUE_NAME_CHARS:
            return False
        stack = re.escape(self.stack_name) if self.stack_name else f"{_QUEUE_NAME_CHARS}+"
        return re.fullmatch(f"{stack}-model-{_QUEUE_NAME_CHARS}+", name) is not None


class ModelRegistry:
    """The registry's reads (cached) and changes, over the table."""

    def __init__(
        self,
        repository: BatchRepository,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rules: RegistryRules | None = None,
    ) -> None:
        self.repository = repository
        self._clock = clock
        self._sleep = sleep
        self.rules = rules or RegistryRules()
        self._cache: tuple[float, dict[str, ServedModel]] | None = None

    # -- reads ------------------------------------------------------------------------

    def models(self) -> dict[str, ServedModel]:
        """Every registered model by name, read at most once a minute per process: models
        change rarely, and a retired one may take that long to be refused by every function
        (`remove` waits that long)."""
        now = time.monotonic()
        cached = self._cache
        if cached is None or now - cached[0] > MODEL_REGISTRY_SECONDS:
            cached = (now, {m.name: m for m in self.repository.models.list_models()})
            self._cache = cached
        return cached[1]

    def forget(self) -> None:
        """Read the registry again at the next use (after a change made elsewhere)."""
        self._cache = None

    def served(self, model: str | None) -> ServedModel | None:
        """`model`'s registry entry, if it has one."""
        return self.models().get(model) if model else None

    def served_model_names(self) -> list[str]:
        """What validation accepts: the stack's own models (SERVED_MODELS) and the
        registry's active ones (empty when both are: any model)."""
        models = list(self.models().values())
        registered = {m.name for m in models if m.status == "active"}
        retiring = {m.name for m in models if m.status == "retiring"}
        named = {name for name in self.rules.own_models if name not in retiring}
        if retiring and not (named or registered):  # an empty list would accept any model
            return ["no model (every registered model is retiring)"]
        return sorted(named | registered)

    # -- changes ----------------------------------------------------------------------

    def register(self, model: ServedModel) -> ServedModel:
        """Add or change a model; its first registration's time is kept, and retiring it here
        (status `retiring`) records when. Refused (InvalidRequestError, ConflictError, with
        the offending field as `param`) when it breaks the rules or the model is another
        fleet's (or was added by hand, fleet empty)."""
        self.rules.check(model)
        now = int(self._clock())
        current = self.repository.models.get_model(model.name)
        if current is not None and current.fleet != model.fleet:
            owner = f"fleet {current.fleet!r}" if current.fleet else "batchctl (by hand)"
            raise ConflictError(
                f"The model {model.name!r} is registered by {owner}: another may not take over "
                "its routing. Remove it there first, or choose another name.",
                param="name",
            )
        created = current.created_at if current and current.created_at else now
        retired_at = None
        if model.status == "retiring":
            retired_at = current.retired_at if current and current.retired_at else now
        stored = model.model_copy(update={"created_at": created, "retired_at": retired_at})
        self.repository.models.put_model(stored)
        self.forget()
        return stored

    def retire(self, name: str) -> bool:
        """Refuse new batches for the model; running ones finish. False if unknown."""
        retired = self.repository.models.retire_model(name, int(self._clock()))
        self.forget()
        return retired

    def unfinished_batches(self, name: str, seen_retiring_at: int | None = None) -> list[str]:
        """The batches for the model that have not ended (every active batch is read), and,
        with `seen_retiring_at`, those still validating that were created before then: their
        model is known only once their file is read, and their intake may have read the
        registry before it showed the model retiring; its shards then go where the registry
        says, the stack's own queues once the model is gone. One created later cannot be."""
        active = self.repository.batches.active_batches(int(self._clock()))
        return [
            batch.id
            for batch in active
            if batch.model == name
            or (
                seen_retiring_at is not None
                and batch.status == "validating"
                and batch.model is None
                and batch.created_at <= seen_retiring_at
            )
        ]

    def remove(self, name: str, *, fleet: str | None = None) -> bool:
        """Retire the model, wait until every process's registry knows (at most a minute
        after it began retiring), then delete it; False if it was not registered, or, with
        `fleet`, is another fleet's (a stack never removes what it does not own).

        Raises ModelInUseError while batches for it have not ended (it stays retiring)."""
        current = self.repository.models.get_model(name)
        if current is None or (fleet is not None and current.fleet != fleet):
            return False
        if not self.retire(name):
            return False
        model = self.repository.models.get_model(name)
        retired_at = model.retired_at if model and model.retired_at else int(self._clock())
        seen_retiring_at = math.ceil(retired_at + MODEL_REGISTRY_SECONDS)
        wait = seen_retiring_at - self._clock()
        if wait > 0:
            self._sleep(wait)  # an intake that read the registry just before still may start one
        unfinished = self.unfinished_batches(name, seen_retiring_at)
        if unfinished:
            listed = ", ".join(unfinished[:5]) + (" ..." if len(unfinished) > 5 else "")
            raise ModelInUseError(
                f"{len(unfinished)} batches for model {name!r}, or still validating and "
                f"perhaps for it, have not ended ({listed}). It is retiring: new batches for "
                "it are refused. Remove it again once they end."
            )
        self.repository.models.delete_model(name)
        self.forget()
        return True
