"""File and Upload items: a File's life from uploaded to processed, Uploads and their parts."""

from __future__ import annotations

from typing import Any

from batch_core.models import Upload, UploadPart
from batch_core.records import (
    FileRecord,
    UploadPartRecord,
    UploadRecord,
)
from batch_core.table_access import TableAccess
from batch_core.table_codec import (
    Page,
    from_item,
    record_from,
    record_item,
    to_item,
    unless_refused,
)
from batch_core.table_keys import FILES_BY_EXPIRY, META, file_pk, listing_keys, upload_pk

_FILE_STATUS = {"#file": "file", "#status": "status"}


class FileTable:
    """File, Upload and upload part items."""

    def __init__(self, access: TableAccess) -> None:
        self._access = access
        self._db = access.db
        self._table = access.name

    def put_file(self, record: FileRecord) -> None:
        file = record.file
        keys: dict[str, Any] = {"pk": file_pk(file.id), "sk": META}
        keys |= listing_keys(record.tenant, "file", file.id)
        if file.expires_at is not None:  # in the expiry index, under its own partition
            keys |= {"id": file.id, "active": FILES_BY_EXPIRY, "expires_at": file.expires_at}
        self._db.put_item(TableName=self._table, Item=record_item(record, **keys))

    def wait_for_file(self, file_id: str, batch_id: str) -> bool:
        """Note that `batch_id` waits for the file's bytes (its upload is being joined); False
        when the file is no longer `uploaded` (the join finished: copy it now)."""
        return self._access.update_if(
            file_pk(file_id),
            update="SET waiting_batches = list_append("
            "if_not_exists(waiting_batches, :empty), :batch)",
            condition="#file.#status = :uploaded",
            names=_FILE_STATUS,
            values={":empty": [], ":batch": [batch_id], ":uploaded": "uploaded"},
        )

    def finish_file(
        self,
        file_id: str,
        *,
        status: str,
        status_details: str | None = None,
        size: int | None = None,
    ) -> list[str]:
        """Move an `uploaded` file to `status` (and its `bytes` to `size`, when given);
        returns the batches that waited for it (in the same write, so none is missed). Empty
        when it was already finished."""
        values: dict[str, Any] = {":status": status, ":uploaded": "uploaded"}
        names = dict(_FILE_STATUS)
        update = "SET #file.#status = :status"
        if size is not None:
            update += ", #file.#bytes = :size"
            values[":size"] = size
            names["#bytes"] = "bytes"
        if status_details:
            update += ", #file.#details = :details"
            values[":details"] = status_details
            names["#details"] = "status_details"
        response = unless_refused(
            self._db.update_item,
            TableName=self._table,
            Key=to_item({"pk": file_pk(file_id), "sk": META}),
            UpdateExpression=update + " REMOVE waiting_batches",
            ConditionExpression="#file.#status = :uploaded",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=to_item(values),
            ReturnValues="UPDATED_OLD",
        )
        if response is None:
            return []
        old = from_item(response.get("Attributes") or {})
        return [str(batch_id) for batch_id in old.get("waiting_batches") or []]

    def get_file(self, file_id: str) -> FileRecord | None:
        values = self._access.item(file_pk(file_id))
        return record_from(FileRecord, values) if values else None

    def list_files(
        self,
        tenant: str,
        *,
        after: str | None,
        limit: int,
        ascending: bool,
        purpose: str | None,
    ) -> Page[FileRecord]:
        """A tenant's files in creation order (or reversed), past the listing position."""
        filters = {"file.purpose": purpose} if purpose else None
        page = self._access.page(tenant, "file", after, limit, ascending=ascending, filters=filters)
        return page.map(lambda values: record_from(FileRecord, values))

    def delete_file(self, file_id: str) -> bool:
        """Forget a file; False if it was not there."""
        return self._access.delete(file_pk(file_id))

    def put_upload(self, record: UploadRecord) -> None:
        self._db.put_item(
            TableName=self._table,
            Item=record_item(record, pk=upload_pk(record.upload.id), sk=META),
        )

    def get_upload(self, upload_id: str) -> UploadRecord | None:
        values = self._access.item(upload_pk(upload_id), consistent=True)
        return record_from(UploadRecord, values) if values else None

    def reserve_upload_bytes(self, upload_id: str, size: int, limit: int) -> bool:
        """Count `size` more bytes of parts against the upload's declared `limit`; False
        when they would not fit (the part is refused before it is stored)."""
        if size > limit:
            return False
        return self._access.update_if(
            upload_pk(upload_id),
            update="ADD received :size",
            condition="attribute_exists(pk) AND "
            "(attribute_not_exists(received) OR received <= :room)",
            values={":size": size, ":room": limit - size},
        )

    def finish_upload(self, record: UploadRecord, upload: Upload) -> bool:
        """Move a pending upload to its final state (completed or cancelled), once."""
        response = unless_refused(
            self._db.put_item,
            TableName=self._table,
            Item=record_item(
                record.model_copy(update={"upload": upload}), pk=upload_pk(upload.id), sk=META
            ),
            # An upload stored in the earlier encoding (a JSON document) has no map to test.
            ConditionExpression="#upload.#status = :pending OR "
            "(attribute_exists(document) AND attribute_not_exists(#status))",
            ExpressionAttributeNames={"#upload": "upload", "#status": "status"},
            ExpressionAttributeValues=to_item({":pending": "pending"}),
        )
        return response is not None

    def put_upload_part(self, record: UploadPartRecord) -> None:
        part: UploadPart = record.part
        self._db.put_item(
            TableName=self._table,
            Item=record_item(record, pk=upload_pk(part.upload_id), sk=f"PART#{part.id}"),
        )

    def list_upload_parts(self, upload_id: str) -> list[UploadPartRecord]:
        return [
            record_from(UploadPartRecord, values)
            for values in self._access.items_under(upload_pk(upload_id), "PART#")
        ]
