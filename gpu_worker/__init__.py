"""The GPU worker: pulls shards from SQS and runs them through an inference engine."""
