# dicom-ingest: `make run` starts the whole flow locally, `make test` runs every test.
SHELL := /bin/bash
GO ?= go
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION ?= 20
export TCP_NODELAY ?= 1
BIN := bin
FUNCTIONS := $(filter-out internal,$(notdir $(wildcard functions/*)))
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.7.0
ENV ?= dev
SITE ?=

.PHONY: run test test-deps unit-test bench build build-functions build-scp lint synth deploy node-tools onboarding fuzz corpus clean

## run: the SCP, the pipeline and the portal in one process on embedded defaults (./data)
run:
	$(GO) run ./scp-task --local

## test: everything (unit, fuzz seeds, DCMTK interop, emulated AWS, browser, VPN), then -race over shared/ and scp-task/; installs missing tools when root
test: test-deps
	$(GO) vet ./...
	$(GO) test -timeout 25m ./...
	CGO_ENABLED=1 $(GO) test -race -timeout 15m ./shared/... ./scp-task/...

test-deps:
	@bash .ci/install-deps.sh

unit-test:
	$(GO) test -short ./...

## bench: load generator against scp-task (file and S3 stores) and DCMTK storescp on the same corpus
bench: test-deps build-scp
	@bash test/bench/run.sh

## build: scp-task and the Lambda bootstraps (linux/arm64, static)
build: build-scp build-functions

build-scp:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/scp-task ./scp-task
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/dicom-loadgen ./test/loadgen

build-functions:
	@for f in $(FUNCTIONS); do \
	  echo "build functions/$$f -> build/functions/$$f/bootstrap"; \
	  CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -tags lambda.norpc -o build/functions/$$f/bootstrap ./functions/$$f || exit 1; \
	done

## lint: go vet and staticcheck
lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

## synth: CloudFormation templates for ENV into cdk.out (offline, no Docker: the images build at deploy time)
synth: build-functions node-tools
	.tools/node/node_modules/.bin/cdk synth -c env=$(ENV) --quiet

## deploy: build the functions and deploy ENV with the AWS credentials in the environment (needs Docker for the images)
deploy: build-functions node-tools
	.tools/node/node_modules/.bin/cdk deploy -c env=$(ENV) --outputs-file cdk-outputs.json

node-tools: .tools/node/node_modules/.installed
.tools/node/node_modules/.installed: .tools/node/package.json .tools/node/package-lock.json
	cd .tools/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## onboarding: the kit for SITE in ENV from `cdk deploy -c env=ENV --outputs-file cdk-outputs.json`
##   (make onboarding ENV=dev SITE=example-hospital; see docs/operations/onboarding.md for a kit without AWS)
OUTPUTS ?= cdk-outputs.json
ONBOARDING_FLAGS ?=
onboarding:
	$(GO) run ./infra/onboarding/cmd/onboarding -env $(ENV) -site $(SITE) -outputs $(OUTPUTS) -out build/onboarding/$(ENV)/$(SITE) $(ONBOARDING_FLAGS)

## fuzz: run every fuzz target for a short while
fuzz:
	@bash test/fuzz.sh

corpus:
	bash test/corpus/make-corpus.sh $${CORPUS_DIR:-/tmp/dicom-corpus}

clean:
	rm -rf $(BIN) build cdk.out cdk-outputs.json
