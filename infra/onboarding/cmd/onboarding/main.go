// Command onboarding writes the onboarding kit of one site: parameters table,
// strongSwan swanctl.conf for the site's VPN edge, DCMTK verification commands
// and troubleshooting table.
//
//	go run ./infra/onboarding/cmd/onboarding -env dev -site site-a -outputs cdk-outputs.json -out build/onboarding/dev/site-a
//
// Pre-shared keys are referenced by their Secrets Manager ARN; they are
// fetched and written into the kit only with -show-secrets.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/dicom-ingest/dicom-ingest/infra/onboarding"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(context.Background(), os.Args[1:], os.Stdout, log); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			log.Error("onboarding failed", "err", err)
		}
		os.Exit(1)
	}
}

// secretFetcher returns the pre-shared keys of a site's tunnels, by tunnel number.
type secretFetcher func(ctx context.Context, arn string) (map[int]string, error)

// run is main without the process: flags in, kit out.
func run(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	return runWith(ctx, args, stdout, log, fetchPSKs)
}

func runWith(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger, fetch secretFetcher) error {
	fs := flag.NewFlagSet("onboarding", flag.ContinueOnError)
	fs.SetOutput(stdout)
	env := fs.String("env", "", "environment name (reads <config-dir>/<env>.json)")
	site := fs.String("site", "", "site name, as in the environment config")
	configDir := fs.String("config-dir", filepath.Join("infra", "config"), "directory of the environment configs")
	outputsPath := fs.String("outputs", "cdk-outputs.json", "stack outputs written by `cdk deploy --outputs-file`")
	out := fs.String("out", "", "directory to write the kit into (default build/onboarding/<env>/<site>)")
	routing := fs.String("routing", string(onboarding.RouteBased), "site edge style: route (XFRM interfaces, both tunnels up) or policy (tunnel 2 standby)")
	labEndpoints := fs.String("lab-endpoints", "", "lab only: two comma-separated tunnel endpoint IPs replacing the stack outputs' tunnel addresses")
	showSecrets := fs.Bool("show-secrets", false, "fetch the pre-shared keys from Secrets Manager and write them into the kit's secrets file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *env == "" || *site == "" {
		fs.Usage()
		return errors.New("onboarding: -env and -site are required")
	}
	if *out == "" {
		*out = filepath.Join("build", "onboarding", *env, *site)
	}
	cfg, err := onboarding.LoadEnvConfig(*configDir, *env)
	if err != nil {
		return err
	}
	f, err := os.Open(*outputsPath)
	if err != nil {
		return fmt.Errorf("onboarding: open outputs (deploy with `cdk deploy --outputs-file %s`): %w", *outputsPath, err)
	}
	outs, err := onboarding.ParseOutputs(f)
	f.Close()
	if err != nil {
		return err
	}
	opts := onboarding.Options{Routing: onboarding.Routing(*routing)}
	if *labEndpoints != "" {
		opts.TunnelEndpoints = strings.Split(*labEndpoints, ",")
	}
	// Build once without keys to learn the secret's ARN and validate the rest
	// before touching AWS.
	kit, err := onboarding.Build(cfg, *site, outs, opts)
	if err != nil {
		return err
	}
	if *showSecrets {
		psks, err := fetch(ctx, kit.PSKSecretARN)
		if err != nil {
			return err
		}
		opts.PSKs = psks
		if kit, err = onboarding.Build(cfg, *site, outs, opts); err != nil {
			return err
		}
	}
	files, err := kit.WriteDir(*out)
	if err != nil {
		return err
	}
	for _, f := range files {
		fmt.Fprintln(stdout, filepath.Join(*out, f.Name))
	}
	if !*showSecrets {
		log.Info("pre-shared keys not written; see the secrets file for where they are", "secret_arn", kit.PSKSecretARN)
	} else {
		log.Warn("the kit's secrets file holds the pre-shared keys; share it only over a secure channel", "file", filepath.Join(*out, onboarding.SecretsFileName))
	}
	return nil
}
