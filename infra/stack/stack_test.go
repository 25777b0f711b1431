package stack

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"

	"github.com/dicom-ingest/dicom-ingest/infra/config"
)

// synthesized is one environment's app, synthesized once and shared by the
// subtests: synthesis through jsii takes tens of seconds.
type synthesized struct {
	stack    *IngestStack
	template assertions.Template
	cfg      *config.Config
}

// fakeAssets creates the build outputs the app stages: a bootstrap per
// function and Dockerfiles, so tests need neither `make build` nor Docker.
func fakeAssets(t testing.TB) (functions, scpCtx, agentCtx string) {
	dir := t.TempDir()
	functions = filepath.Join(dir, "functions")
	for _, name := range FunctionNames {
		d := filepath.Join(functions, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "bootstrap"), []byte("#!/bin/sh\n# test stand-in for "+name+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	scpCtx = filepath.Join(dir, "scp")
	agentCtx = filepath.Join(dir, "agent")
	for _, p := range []string{filepath.Join(scpCtx, "scp-task"), agentCtx} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(scpCtx, "scp-task", "Dockerfile"), []byte("FROM scratch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(agentCtx, "Dockerfile"), []byte("FROM scratch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return functions, scpCtx, agentCtx
}

func synth(t testing.TB, cfg *config.Config) *synthesized {
	functions, scpCtx, agentCtx := fakeAssets(t)
	app := awscdk.NewApp(&awscdk.AppProps{Context: AppContext(), Outdir: jsii.String(t.TempDir())})
	st, err := NewIngestStack(app, "DicomIngest-"+cfg.Name, &Props{
		Config: cfg, FunctionsDir: functions, ScpContextDir: scpCtx, ScpDockerfile: "scp-task/Dockerfile", AgentContextDir: agentCtx,
	})
	if err != nil {
		t.Fatal(err)
	}
	ApplyNag(app)
	return &synthesized{stack: st, template: assertions.Template_FromStack(st.Stack, nil), cfg: cfg}
}

func TestNagDebug(t *testing.T) {
	cfg, err := config.Load("../config", os.Getenv("NAG_ENV"))
	if err != nil {
		t.Skip(err)
	}
	s := synth(t, cfg)
	errs := assertions.Annotations_FromStack(s.stack.Stack).FindError(jsii.String("*"), assertions.Match_AnyValue())
	for _, e := range *errs {
		t.Logf("%s: %v", *e.Id, e.Entry.Data)
	}
	warns := assertions.Annotations_FromStack(s.stack.Stack).FindWarning(jsii.String("*"), assertions.Match_AnyValue())
	for _, e := range *warns {
		t.Logf("WARN %s: %v", *e.Id, e.Entry.Data)
	}
}
