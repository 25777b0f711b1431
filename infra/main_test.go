package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"

	"github.com/dicom-ingest/dicom-ingest/infra/stack"
)

// TestRun synthesizes the dev environment the way `cdk synth -c env=dev`
// does (context and output directory from the CLI's environment variables),
// with the real Dockerfiles and stand-in function bootstraps, and without
// network, credentials or Docker.
func TestRun(t *testing.T) {
	fns := t.TempDir()
	for _, name := range stack.FunctionNames {
		if err := os.MkdirAll(filepath.Join(fns, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(fns, name, "bootstrap"), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out := t.TempDir()
	if err := run(newApp(out, map[string]any{
		"env":           "dev",
		"configDir":     "config",
		"functionsDir":  fns,
		"scpContext":    "..",
		"scpDockerfile": "scp-task/Dockerfile",
		"agentContext":  "assets/metrics-agent",
	})); err != nil {
		t.Fatalf("run: %v", err)
	}
	var manifest struct {
		Artifacts map[string]struct {
			Type     string
			Metadata map[string][]struct {
				Type string
				Data any
			}
		}
		Missing []struct{ Key string }
	}
	b, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &manifest); err != nil {
		t.Fatal(err)
	}
	art, ok := manifest.Artifacts["DicomIngest-dev"]
	if !ok || art.Type != "aws:cloudformation:stack" {
		t.Fatalf("no DicomIngest-dev stack in the assembly: %s", b)
	}
	for _, m := range manifest.Missing {
		t.Errorf("needs context look-up %s (cdk synth would need credentials)", m.Key)
	}
	// What `cdk synth` would report as errors: cdk-nag findings included.
	for path, entries := range art.Metadata {
		for _, e := range entries {
			if e.Type == "aws:cdk:error" {
				t.Errorf("error at %s: %v", path, e.Data)
			}
		}
	}
	// The real scp-task Dockerfile is staged with its build context.
	staged, err := filepath.Glob(filepath.Join(out, "asset.*", "scp-task", "Dockerfile"))
	if err != nil || len(staged) != 1 {
		t.Fatalf("staged scp-task Dockerfile: %v %v", staged, err)
	}
	df, err := os.ReadFile(staged[0])
	if err != nil || !strings.Contains(string(df), "USER nonroot") {
		t.Errorf("staged Dockerfile does not run as nonroot (%v)", err)
	}
	// The metrics agent is staged too, and builds a pinned agent version.
	agent, err := filepath.Glob(filepath.Join(out, "asset.*", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	pinned := regexp.MustCompile(`(?m)^ARG AGENT_TAG=\d+\.\d+\.\w+$`)
	found := false
	for _, p := range agent {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "cloudwatch-agent") {
			found = true
			if !pinned.Match(b) {
				t.Errorf("%s: the CloudWatch agent tag is not pinned to a version:\n%s", p, b)
			}
		}
	}
	if !found {
		t.Errorf("no staged CloudWatch agent Dockerfile among %v", agent)
	}
}

// newApp is what main builds, with the context the CLI would pass and an
// output directory.
func newApp(outdir string, ctx map[string]any) awscdk.App {
	merged := *stack.AppContext()
	for k, v := range ctx {
		merged[k] = v
	}
	return awscdk.NewApp(&awscdk.AppProps{Context: &merged, Outdir: jsii.String(outdir)})
}

func TestRunNeedsEnv(t *testing.T) {
	err := run(newApp(t.TempDir(), nil))
	if err == nil || !strings.Contains(err.Error(), "pass -c env=<name>") {
		t.Fatalf("run without env = %v, want the -c env hint", err)
	}
	err = run(newApp(t.TempDir(), map[string]any{"env": "nosuch", "configDir": "config"}))
	if err == nil || !strings.Contains(err.Error(), "nosuch.json") {
		t.Fatalf("run with an unknown env = %v, want the missing file named", err)
	}
}

// TestRunRefusesReservationsOverTheAccount: a reserved concurrency Lambda
// would refuse at deployment (4 × 300 + 1 of a default account's 1,000,
// leaving fewer than 100 unreserved) stops `cdk synth`, naming the key.
func TestRunRefusesReservationsOverTheAccount(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("config", "dev.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	doc["pipeline"].(map[string]any)["reservedConcurrency"] = 300
	if b, err = json.Marshal(doc); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dev.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	err = run(newApp(t.TempDir(), map[string]any{"env": "dev", "configDir": dir}))
	if err == nil || !strings.Contains(err.Error(), "pipeline.reservedConcurrency: 300 × 4 functions + 1 for commitment's schedule = 1201 reserved of pipeline.accountConcurrency 1000") {
		t.Fatalf("run = %v, want the reservation refused", err)
	}
}
