// Command infra is the dicom-ingest CDK app. cdk.json runs it, through the
// CDK CLI pinned in .tools/node (a bare `npx cdk` fetches whatever CLI is
// newest):
//
//	make synth ENV=dev              # templates for infra/config/dev.json
//	make deploy ENV=prod            # deploy prod
//
// Context keys (all optional except env): configDir (default infra/config),
// functionsDir (default build/functions, from `make build-functions`),
// scpContext (default ., the scp-task image's build context),
// scpDockerfile (default scp-task/Dockerfile), agentContext (default
// infra/assets/metrics-agent).
package main

import (
	"fmt"
	"os"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"

	"github.com/dicom-ingest/dicom-ingest/infra/config"
	"github.com/dicom-ingest/dicom-ingest/infra/stack"
	"github.com/dicom-ingest/dicom-ingest/shared/cli"
)

func main() {
	defer jsii.Close()
	// Context (-c env=…) and the output directory reach the app from the
	// CDK CLI through CDK_CONTEXT_JSON and CDK_OUTDIR.
	app := awscdk.NewApp(&awscdk.AppProps{Context: stack.AppContext()})
	if err := run(app); err != nil {
		os.Exit(cli.Exit(os.Stderr, "infra", err))
	}
}

// run builds the environment named by the app's "env" context into app and
// synthesizes it.
func run(app awscdk.App) error {
	ctx := func(key, def string) string {
		if v, ok := app.Node().TryGetContext(jsii.String(key)).(string); ok && v != "" {
			return v
		}
		return def
	}
	env := ctx("env", "")
	if env == "" {
		return fmt.Errorf("no environment: pass -c env=<name> (a file infra/config/<name>.json)")
	}
	cfg, err := config.Load(ctx("configDir", "infra/config"), env)
	if err != nil {
		return err
	}
	if _, err := stack.NewIngestStack(app, "DicomIngest-"+cfg.Name, &stack.Props{
		Config:          cfg,
		FunctionsDir:    ctx("functionsDir", "build/functions"),
		ScpContextDir:   ctx("scpContext", "."),
		ScpDockerfile:   ctx("scpDockerfile", "scp-task/Dockerfile"),
		AgentContextDir: ctx("agentContext", "infra/assets/metrics-agent"),
	}); err != nil {
		return err
	}
	stack.ApplyNag(app)
	app.Synth(nil)
	return nil
}
