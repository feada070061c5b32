# The project's vocabulary: install, lint, test, demo, bench, fuzz, synth.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install lint format test test-ceph demo bench fuzz synth node_modules clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -e '.[local,dev]'
	@touch $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: install lint
	$(BIN)/pytest

# Optional: tests/contract against a real Ceph RADOS Gateway, a one-node cluster (monitor, memstore OSD,
# radosgw) on 127.0.0.1 in a temporary folder (devtools/ceph_rgw.py). Debian's Ceph packages are installed
# with apt-get when their programs are missing, which needs root.
CEPH_PACKAGES := ceph-mon ceph-osd radosgw ceph-common
CEPH_PROGRAMS := monmaptool ceph-mon ceph-osd radosgw ceph radosgw-admin

test-ceph: install
	@for program in $(CEPH_PROGRAMS); do command -v $$program >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
		echo "apt-get install -y --no-install-recommends $(CEPH_PACKAGES)"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends $(CEPH_PACKAGES); \
	fi
	$(BIN)/python -m devtools.ceph_rgw run -- $(BIN)/pytest tests/contract -p no:cacheprovider

demo: install
	$(BIN)/python -m devtools.demo

bench: install
	$(BIN)/python -m bench.run

# The package reader's fuzz properties (tests/unit/test_reader_fuzz.py), which the suite runs briefly and
# derandomized, here with FUZZ_EXAMPLES fresh random examples each.
FUZZ_EXAMPLES ?= 20000

fuzz: install
	REINDEXER_FUZZ=long REINDEXER_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/unit/test_reader_fuzz.py \
		-q -p no:cacheprovider --timeout=0 --hypothesis-show-statistics

# --- CDK ---------------------------------------------------------------------------------------------------
# The CDK CLI is pinned in package.json / package-lock.json (2.1148.x reads aws-cdk-lib 2.275's assemblies).
NODE_STAMP := node_modules/.installed-stamp
CDK := node_modules/.bin/cdk

node_modules: $(NODE_STAMP)

$(NODE_STAMP): package.json $(wildcard package-lock.json)
	@command -v npm >/dev/null || { echo "Node.js and npm are required for the CDK CLI" >&2; exit 1; }
	if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
	@touch $(NODE_STAMP)

# Synthesis talks to no AWS service: no credentials or AWS config files (no STS call for the default account,
# so the templates are account-agnostic), no instance metadata, no context lookups, and none of the CLI's
# version check, notices or telemetry. The Lambda bundling still downloads the pinned wheels from PyPI.
# app.py runs with the virtualenv's python3 first on PATH (cdk.json: "python3 app.py").
CDK_ENV := env -u AWS_PROFILE -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN \
	-u AWS_CONTAINER_CREDENTIALS_RELATIVE_URI -u AWS_CONTAINER_CREDENTIALS_FULL_URI \
	-u AWS_WEB_IDENTITY_TOKEN_FILE AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
	AWS_EC2_METADATA_DISABLED=true CDK_DISABLE_VERSION_CHECK=1 CDK_DISABLE_CLI_TELEMETRY=true \
	JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 PATH=$(CURDIR)/$(BIN):$$PATH
CDK_SYNTH := $(CDK_ENV) $(CDK) synth --quiet --no-notices --no-lookups
PUBLIC_CONTEXT := -c access=public -c channel_prefixes=dev,prod -c alarm_email=ops@example.com

# Both access modes; cdk-nag's AwsSolutions findings that are not acknowledged fail the synthesis, then
# cfn-lint must find nothing (warnings included) in either template. Rules ignored on purpose: .cfnlintrc.
synth: install node_modules
	rm -rf cdk.out
	@echo "cdk synth: default settings (private) -> cdk.out"
	@$(CDK_SYNTH) --output cdk.out
	@echo "cdk synth: $(PUBLIC_CONTEXT) -> cdk.out/public"
	@$(CDK_SYNTH) $(PUBLIC_CONTEXT) --output cdk.out/public
	$(BIN)/cfn-lint -- cdk.out/*.template.json cdk.out/public/*.template.json
	@echo "synth: both templates synthesized, cdk-nag AwsSolutions and cfn-lint clean"

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .bench cdk.out node_modules
