"""The model registry: one item per served model, all in one partition (one query lists them)."""

from __future__ import annotations

from batch_core.records import ServedModel
from batch_core.table_access import TableAccess
from batch_core.table_codec import record_from, record_item
from batch_core.table_keys import MODELS, model_sk


class ModelTable:
    """Served models: where each one's shards go, and whether it takes new batches."""

    def __init__(self, access: TableAccess) -> None:
        self._access = access
        self._db = access.db
        self._table = access.name

    def put_model(self, model: ServedModel) -> None:
        self._db.put_item(
            TableName=self._table, Item=record_item(model, pk=MODELS, sk=model_sk(model.name))
        )

    def get_model(self, name: str) -> ServedModel | None:
        values = self._access.item(MODELS, model_sk(name), consistent=True)
        return record_from(ServedModel, values) if values else None

    def list_models(self) -> list[ServedModel]:
        return [record_from(ServedModel, v) for v in self._access.items_under(MODELS, "MODEL#")]

    def retire_model(self, name: str, now: int = 0) -> bool:
        """Refuse new batches for the model from now on; False if it is not registered.
        `retired_at` keeps the first retirement's time."""
        return self._access.update_if(
            MODELS,
            model_sk(name),
            update="SET #status = :retiring, retired_at = if_not_exists(retired_at, :now)",
            condition="attribute_exists(pk)",
            names={"#status": "status"},
            values={":retiring": "retiring", ":now": now},
        )

    def delete_model(self, name: str) -> None:
        self._access.delete(MODELS, model_sk(name))
