# dicom-ingest: `make run` starts the whole flow locally, `make test` runs every test.
SHELL := /bin/bash
GO ?= go
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION ?= 20
export TCP_NODELAY ?= 1
BIN := bin
FUNCTIONS := $(filter-out internal,$(notdir $(wildcard functions/*)))
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.7.0
DEADCODE := golang.org/x/tools/cmd/deadcode@v0.52.0
# go test's output, one line a package, then the failures and the skips with their reasons; exits as go test does.
GOTESTSUM := $(GO) run gotest.tools/gotestsum@v1.13.0 --format pkgname
export DICOM_CORPUS ?= /tmp/dicom-corpus
# make test TEST_PKGS=./test/pipeline/ RACE_PKGS= narrows a run to some packages (RACE_PKGS empty: no -race run).
TEST_PKGS ?= ./...
RACE_PKGS ?= ./shared/... ./scp-task/... ./functions/...
ENV ?= dev
SITE ?=

.PHONY: run help test test-deps test-corpus unit-test bench build build-functions build-scp lint synth deploy node-tools onboarding fuzz corpus clean

## run: the SCP, the pipeline and the portal in one process on embedded defaults (./data)
run:
	@echo "building scp-task (the first build takes a minute) ..."
	@$(GO) build -o $(BIN)/scp-task ./scp-task
	@exec $(BIN)/scp-task --local

## help: what each target does (these ## lines of the Makefile)
help:
	@sed -n 's/^## //p' $(firstword $(MAKEFILE_LIST))

## test: everything (unit, fuzz seeds, DCMTK interop, emulated AWS, browser, VPN), then -race over shared/, scp-task/ and functions/;
##   installs missing tools (the Debian packages only as root). Each run ends with what was skipped and why: a test
##   that lacks a tool skips on a developer's machine and fails under CI=true (shared/testenv).
test: test-deps test-corpus
	$(GO) mod tidy -diff
	$(GO) vet ./...
	$(GOTESTSUM) -- -timeout 25m $(TEST_PKGS)
	$(if $(RACE_PKGS),CGO_ENABLED=1 $(GOTESTSUM) -- -race -timeout 15m $(RACE_PKGS))

## test-deps: what the tests need, from .ci/install-deps.sh (Debian packages when root; npm tools, the Lambda emulator)
test-deps:
	@bash .ci/install-deps.sh

## test-corpus: the corpus's mixed set in DICOM_CORPUS (seconds): the tests compare our readers with DCMTK on it
test-corpus:
	@bash test/corpus/make-corpus.sh $(DICOM_CORPUS) mixed >/dev/null

## unit-test: go test -short ./... (no peers started; seconds to a minute)
unit-test:
	$(GO) test -short ./...

## bench: load generator against scp-task (file and S3 stores), DCMTK storescp and Orthanc on the same corpus, then the
##   site link (storescp, S3 and staged stores) and the serverless chain; BENCH=loopback|sitelink|chain runs one part (docs/performance.md)
BENCH ?= all
bench: test-deps build-scp
	@BENCH=$(BENCH) bash test/bench/run.sh

## build: scp-task and the Lambda bootstraps (linux/arm64, static)
build: build-scp build-functions

## build-scp: bin/scp-task and bin/dicom-loadgen for this machine
build-scp:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/scp-task ./scp-task
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/dicom-loadgen ./test/loadgen

## build-functions: build/functions/<name>/bootstrap for Lambda (linux/arm64), which synth and deploy package
build-functions:
	@for f in $(FUNCTIONS); do \
	  echo "build functions/$$f -> build/functions/$$f/bootstrap"; \
	  CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -tags lambda.norpc -o build/functions/$$f/bootstrap ./functions/$$f || exit 1; \
	done

## lint: gofmt, go vet, staticcheck and deadcode -test (no unreachable function)
lint:
	@unformatted=$$(git ls-files -z -- '*.go' | xargs -0 gofmt -l); if [ -n "$$unformatted" ]; then echo "not gofmt-formatted:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	@dead=$$($(GO) run $(DEADCODE) -test ./...); if [ -n "$$dead" ]; then echo "unreachable code (deadcode -test):"; echo "$$dead"; exit 1; fi

## synth: CloudFormation templates for ENV into cdk.out (offline, no Docker: the images build at deploy time)
synth: build-functions node-tools
	.tools/node/node_modules/.bin/cdk synth -c env=$(ENV) --quiet

## deploy: build the functions and deploy ENV with the AWS credentials in the environment (needs Docker for the images)
deploy: build-functions node-tools
	.tools/node/node_modules/.bin/cdk deploy -c env=$(ENV) --outputs-file cdk-outputs.json

## node-tools: the CDK CLI and dynalite in .tools/node (npm ci, pinned by its lock file)
node-tools: .tools/node/node_modules/.installed
.tools/node/node_modules/.installed: .tools/node/package.json .tools/node/package-lock.json
	cd .tools/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## onboarding: the kit for SITE in ENV from `cdk deploy -c env=ENV --outputs-file cdk-outputs.json`
##   (make onboarding ENV=dev SITE=test-hospital; see docs/operations/onboarding.md for a kit without AWS)
OUTPUTS ?= cdk-outputs.json
ONBOARDING_FLAGS ?=
onboarding:
	@test -n "$(SITE)" || { echo "make onboarding: set SITE to a site of infra/config/$(ENV).json (sites[].name)" >&2; exit 2; }
	$(GO) run ./infra/onboarding/cmd/onboarding -env $(ENV) -site $(SITE) -outputs $(OUTPUTS) -out build/onboarding/$(ENV)/$(SITE) $(ONBOARDING_FLAGS)

## fuzz: run every fuzz target for FUZZTIME (default 20s); FUZZJOBS, FUZZPARALLEL, FUZZMATCH: see test/fuzz.sh
fuzz:
	@bash test/fuzz.sh

## corpus: the whole corpus (ct, mr, big, mixed) in DICOM_CORPUS (default /tmp/dicom-corpus), as the bench uses it
corpus:
	bash test/corpus/make-corpus.sh $(DICOM_CORPUS)

## clean: remove bin/, build/, cdk.out and cdk-outputs.json
clean:
	rm -rf $(BIN) build cdk.out cdk-outputs.json
