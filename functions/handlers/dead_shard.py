"""Shards that failed every delivery (the shard queue's dead-letter queue) -> end them.

Each request of such a shard that never ran gets a `shard_failed` error line, and the shard
settles, so the batch is never stuck in progress because of one poisonous shard.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from pydantic import ValidationError

from batch_core.messaging import ShardTask
from batch_core.wiring import default_stages
from handlers.sqs_batch import sqs_batch_handler

logger = Logger()
tracer = Tracer()
metrics = Metrics()


class ShardStillLeasedError(Exception):
    """A live worker still holds the shard: SQS redelivers the record later."""


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    try:
        task = ShardTask.model_validate_json(record.body)
    except ValidationError:
        # Names no shard, so there is nothing to end; failing would only redeliver it.
        logger.error("dropping a dead-letter message that names no shard: %.200r", record.body)
        return
    if not default_stages().ending.fail_shard(task):
        raise ShardStillLeasedError(f"shard {task.batch_id}:{task.shard_index} is still leased")
    logger.warning(
        "poison shard ended", extra={"batch_id": task.batch_id, "shard": task.shard_index}
    )
    metrics.add_metric(name="PoisonShards", unit=MetricUnit.Count, value=1)


handler = sqs_batch_handler(record_handler, logger, tracer, metrics)
