// Command onboarding writes the onboarding kit of one site: parameters table,
// strongSwan swanctl.conf for the site's VPN edge, DCMTK verification commands
// and troubleshooting table.
//
//	aws ec2 describe-vpn-connections --output json \
//	    --query 'VpnConnections[].{VpnConnectionId: VpnConnectionId, Options: {TunnelOptions: Options.TunnelOptions[].{OutsideIpAddress: OutsideIpAddress}}}' >vpn.json
//	go run ./infra/onboarding/cmd/onboarding -env dev -site test-hospital -outputs cdk-outputs.json \
//	    -vpn-connections vpn.json -nlb-addresses 10.40.1.10,10.40.2.10 -out build/onboarding/dev/test-hospital
//
// The tunnels' outside addresses and the NLB's private IPs are not stack
// outputs (CloudFormation cannot export them), hence -vpn-connections and
// -nlb-addresses. Pre-shared keys are referenced by their Secrets Manager
// ARNs; they are fetched and written into the kit only with -show-secrets.
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

// secretFetcher returns a secret's SecretString.
type secretFetcher func(ctx context.Context, arn string) (string, error)

// run is main without the process: flags in, kit out.
func run(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	return runWith(ctx, args, stdout, log, fetchSecret)
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
	vpnConnections := fs.String("vpn-connections", "", "output of `aws ec2 describe-vpn-connections --output json`: the tunnels' outside addresses")
	nlbAddresses := fs.String("nlb-addresses", "", "the NLB's private IPs, comma-separated (when the stack outputs have no NlbAddresses)")
	labEndpoints := fs.String("lab-endpoints", "", "lab only: two comma-separated tunnel endpoint IPs (the local peer), instead of -vpn-connections")
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
	if *nlbAddresses != "" {
		opts.RemoteIPs = strings.Split(*nlbAddresses, ",")
	}
	switch {
	case *labEndpoints != "":
		opts.TunnelEndpoints = strings.Split(*labEndpoints, ",")
	case *vpnConnections != "":
		if _, err := cfg.Site(*site); err != nil {
			return err
		}
		id, ok := outs.VPNConnectionID(*site)
		if !ok {
			return fmt.Errorf("onboarding: site %s: %w: %s%s", *site, onboarding.ErrMissingOutput, onboarding.OutVPNConnection, *site)
		}
		vf, err := os.Open(*vpnConnections)
		if err != nil {
			return fmt.Errorf("onboarding: open vpn connections: %w", err)
		}
		opts.TunnelEndpoints, err = onboarding.ParseVPNConnections(vf, id)
		vf.Close()
		if err != nil {
			return err
		}
	}
	// Build once without keys to learn the secret's ARN and validate the rest
	// before touching AWS.
	kit, err := onboarding.Build(cfg, *site, outs, opts)
	if err != nil {
		return err
	}
	if *showSecrets {
		opts.PSKs = map[int]string{}
		for _, t := range kit.Tunnels {
			raw, err := fetch(ctx, t.PSKSecretARN)
			if err != nil {
				return err
			}
			psks, err := onboarding.ParsePSKSecret(raw)
			if err != nil {
				return fmt.Errorf("onboarding: tunnel %d key from %s: %w", t.Number, t.PSKSecretARN, err)
			}
			opts.PSKs[t.Number] = psks[t.Number]
		}
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
		log.Info("pre-shared keys not written; the secrets file says where they are", "file", filepath.Join(*out, onboarding.SecretsFileName))
	} else {
		log.Warn("the kit's secrets file holds the pre-shared keys; share it only over a secure channel", "file", filepath.Join(*out, onboarding.SecretsFileName))
	}
	return nil
}
