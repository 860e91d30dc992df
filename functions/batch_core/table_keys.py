"""The single table's keys and indexes: one place names every item kind's partition and sort key."""

from __future__ import annotations

import time

META = "META"

ACTIVE_BY_EXPIRY = "ActiveByExpiry"

BY_TENANT = "ByTenant"

FILES_BY_EXPIRY = "file"
"""The expiry index's partition of File items (batches not yet ended are under "1")."""

SLOTS_BY_EXPIRY = "slot"
"""The expiry index's partition of tenants' batch slots (a sweep releases leaked ones)."""

MODELS = "MODELS"
"""The partition of the model registry (one item per served model)."""

TENANTS = "TENANTS"
"""The partition of tenants' own limits (one item per tenant that has any: `batchctl tenants`)."""

TENANT_LOAD = "LOAD"
"""The sort key of a tenant's counters: active batches and the requests they hold."""


def batch_pk(batch_id: str) -> str:
    return f"BATCH#{batch_id}"


def shard_sk(index: int) -> str:
    return f"SHARD#{index:05d}"


def file_pk(file_id: str) -> str:
    return f"FILE#{file_id}"


def webhook_pk(endpoint_id: str) -> str:
    return f"WEBHOOK#{endpoint_id}"


def upload_pk(upload_id: str) -> str:
    return f"UPLOAD#{upload_id}"


def outbox_pk(name: str) -> str:
    return f"OUTBOX#{name}"


def api_key_pk(key_hash: str) -> str:
    return f"APIKEY#{key_hash}"


def model_sk(name: str) -> str:
    return f"MODEL#{name}"


def rate_pk(tenant: str) -> str:
    """The tenant's request bucket (`TenantTable.take_tokens`)."""
    return f"RATE#{tenant}"


def tenant_pk(tenant: str) -> str:
    return f"TENANT#{tenant}"


def limits_sk(tenant: str) -> str:
    return f"LIMITS#{tenant}"


def held_pk(tenant: str) -> str:
    """A partition of its own, not the tenant's: the workers read and clear it as shards
    settle, and their role reaches no other item of a tenant (infra/worker-fleet.yaml)."""
    return f"HELD#{tenant}"


def held_sk(batch_id: str) -> str:
    """A running batch of the tenant that still holds shards back (`Turns`: priority)."""
    return f"HELD#{batch_id}"


def slot_sk(batch_id: str) -> str:
    return f"SLOT#{batch_id}"


def listing_keys(tenant: str, kind: str, object_id: str) -> dict[str, str]:
    """The ByTenant index's keys: one partition per tenant and kind, sorted by creation time
    in nanoseconds (`created_at` has whole seconds only; ids are not time-ordered)."""
    return {
        "tenant_kind": f"{tenant}#{kind}",
        "created_sort": f"{time.time_ns():020d}#{object_id}",
    }
