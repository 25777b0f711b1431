// Command onboarding writes the onboarding kit of one site: parameters table,
// strongSwan swanctl.conf for the site's VPN edge, DCMTK verification commands
// and troubleshooting table.
//
//	aws ec2 describe-vpn-connections --region eu-west-1 --output json \
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
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/dicom-ingest/dicom-ingest/infra/onboarding"
	"github.com/dicom-ingest/dicom-ingest/shared/cli"
)

// command prefixes what the command tells its person on stderr (the
// repository's rule for command-line tools, shared/cli).
const command = "onboarding"

func main() {
	cli.Main(command, func(args []string, stdout, stderr io.Writer) error {
		return run(context.Background(), args, stdout, stderr)
	})
}

// secretFetcher returns a secret's SecretString, read in region (the
// kit's PSKSecret.Region, its ARN's).
type secretFetcher func(ctx context.Context, arn, region string) (string, error)

// awsRunner runs the AWS CLI with args and returns its standard output.
type awsRunner func(ctx context.Context, args ...string) ([]byte, error)

// deps are the command's side doors to AWS, replaced in tests.
type deps struct {
	fetch secretFetcher
	aws   awsRunner // nil when the AWS CLI is not installed
}

// run is main without the process: flags in, kit out.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	d := deps{fetch: fetchSecret}
	if path, err := exec.LookPath("aws"); err == nil {
		d.aws = func(ctx context.Context, args ...string) ([]byte, error) {
			var stderr bytes.Buffer
			cmd := exec.CommandContext(ctx, path, args...)
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				return nil, fmt.Errorf("aws %s: %w: %s", strings.Join(args[:2], " "), err, strings.TrimSpace(stderr.String()))
			}
			return out, nil
		}
	}
	return runWith(ctx, args, stdout, stderr, d)
}

// runWith is run with its side doors: the kit's files (or -help's usage)
// are listed on stdout; notes go to stderr, where main reports the error.
func runWith(ctx context.Context, args []string, stdout, stderr io.Writer, d deps) error {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	env := fs.String("env", "", "environment name (reads <config-dir>/<env>.json)")
	site := fs.String("site", "", "site name, as in the environment config")
	configDir := fs.String("config-dir", filepath.Join("infra", "config"), "directory of the environment configs")
	outputsPath := fs.String("outputs", "cdk-outputs.json", "stack outputs: the JSON file cdk deploy --outputs-file writes (make deploy writes cdk-outputs.json)")
	out := fs.String("out", "", "directory to write the kit into (default build/onboarding/<env>/<site>)")
	routing := fs.String("routing", string(onboarding.RouteBased), "site edge style: route (XFRM interfaces, both tunnels up) or policy (tunnel 2 standby)")
	vpnConnections := fs.String("vpn-connections", "", "the JSON file of 'aws ec2 describe-vpn-connections --output json': the tunnels' outside addresses (default: ask the AWS CLI)")
	nlbAddresses := fs.String("nlb-addresses", "", "the NLB's private IPs, comma-separated (default: the NlbAddresses output, else ask the AWS CLI)")
	useCLI := fs.Bool("aws-cli", true, "look up what the stack outputs lack (tunnel addresses, NLB IPs) with the AWS CLI's read-only describe calls")
	labEndpoints := fs.String("lab-endpoints", "", "lab only: two comma-separated tunnel endpoint IPs (the local peer), instead of -vpn-connections")
	showSecrets := fs.Bool("show-secrets", false, "fetch the pre-shared keys from Secrets Manager and write them into the kit's secrets file")
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	if *env == "" || *site == "" {
		return cli.UsageError(fs, errors.New("-env and -site are required (ENV= and SITE= to make onboarding)"))
	}
	if err := cli.FlagsOnly(fs); err != nil {
		return err
	}
	if *out == "" {
		*out = filepath.Join("build", "onboarding", *env, *site)
	}
	cfg, err := onboarding.LoadEnvConfig(*configDir, *env)
	if errors.Is(err, iofs.ErrNotExist) {
		return fmt.Errorf("%w: check -env (ENV= to make onboarding) and -config-dir", err)
	}
	if err != nil {
		return err
	}
	// The site first: it needs no deployment, and a wrong one is named
	// with the sites there are.
	if _, err := cfg.Site(*site); err != nil {
		return fmt.Errorf("%w: check -site (SITE= to make onboarding)", err)
	}
	f, err := os.Open(*outputsPath)
	if err != nil {
		return fmt.Errorf("open outputs (`make deploy ENV=<env>` writes cdk-outputs.json; or give -outputs, OUTPUTS= to make onboarding): %w", err)
	}
	outs, err := onboarding.ParseOutputs(f)
	f.Close()
	if err != nil {
		return err
	}
	aws := d.aws
	if !*useCLI {
		aws = nil
	}
	opts := onboarding.Options{Routing: onboarding.Routing(*routing)}
	if opts.RemoteIPs, err = nlbIPs(ctx, *nlbAddresses, cfg, outs, aws, stderr); err != nil {
		return err
	}
	if opts.TunnelEndpoints, err = tunnelEndpoints(ctx, *labEndpoints, *vpnConnections, cfg, *site, outs, aws, stderr); err != nil {
		return err
	}
	// Build once without keys to learn the secret's ARN and validate the rest
	// before touching AWS.
	kit, err := onboarding.Build(cfg, *site, outs, opts)
	if err != nil {
		return err
	}
	if *showSecrets {
		if missing := kit.MissingPSKSecrets(); len(missing) > 0 {
			var tunnels []string
			for _, n := range missing {
				tunnels = append(tunnels, fmt.Sprintf("tunnel %d", n))
			}
			return fmt.Errorf("-show-secrets: no pre-shared key secret for %s: the stack output %s names none, so there is nothing to fetch (the kit made without -show-secrets says so)",
				strings.Join(tunnels, " and "), kit.PSKOutput)
		}
		// Each secret once: a site's two tunnels may share one.
		opts.PSKs = map[int]string{}
		for _, s := range kit.PSKSecrets() {
			raw, err := d.fetch(ctx, s.ARN, s.Region)
			if err != nil {
				return err
			}
			psks, err := onboarding.ParsePSKSecret(raw)
			if err != nil {
				return fmt.Errorf("key of %s from %s: %w", s.TunnelNames(), s.ARN, err)
			}
			for _, n := range s.Tunnels {
				opts.PSKs[n] = psks[n]
			}
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
		cli.Notef(stderr, command, "pre-shared keys not written: %s says where they are", filepath.Join(*out, onboarding.SecretsFileName))
	} else {
		cli.Notef(stderr, command, "%s holds the pre-shared keys: share it only over a secure channel", filepath.Join(*out, onboarding.SecretsFileName))
	}
	return nil
}

// tunnelEndpoints finds the tunnels' outside addresses: the lab flag, the
// describe-vpn-connections file, nothing (when the outputs carry them), or
// the AWS CLI.
func tunnelEndpoints(ctx context.Context, lab, file string, cfg onboarding.EnvConfig, site string, outs onboarding.Outputs, aws awsRunner, stderr io.Writer) ([]string, error) {
	if lab != "" {
		return onboarding.SplitList("-lab-endpoints", lab)
	}
	if _, ok := outs.Lookup(onboarding.OutTunnel1Address + site); ok && file == "" {
		return nil, nil // Build reads them from the outputs
	}
	id, ok := outs.VPNConnectionID(site)
	if !ok {
		return nil, nil // Build reports the missing output
	}
	var data []byte
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read -vpn-connections: %w", err)
		}
		data = b
	case aws != nil:
		cli.Notef(stderr, command, "looking up the tunnel addresses of %s in %s with the AWS CLI", id, cfg.Region)
		b, err := aws(ctx, "ec2", "describe-vpn-connections", "--region", cfg.Region, "--vpn-connection-ids", id,
			"--query", onboarding.VPNConnectionsQuery, "--output", "json")
		if err != nil {
			return nil, err
		}
		data = b
	default:
		return nil, nil // Build explains what is missing
	}
	return onboarding.ParseVPNConnections(bytes.NewReader(data), id)
}

// nlbIPs finds the NLB's private addresses: the flag, nothing (when the
// outputs carry them), or the AWS CLI via the NLB's interfaces.
func nlbIPs(ctx context.Context, flagValue string, cfg onboarding.EnvConfig, outs onboarding.Outputs, aws awsRunner, stderr io.Writer) ([]string, error) {
	if flagValue != "" {
		return onboarding.SplitList("-nlb-addresses", flagValue)
	}
	if _, ok := outs.Lookup(onboarding.OutNLBAddresses); ok {
		return nil, nil
	}
	arn, ok := outs.Lookup(onboarding.OutNLBArn)
	if !ok || aws == nil {
		return nil, nil // Build explains what is missing
	}
	desc, err := onboarding.NLBInterfaceDescription(arn)
	if err != nil {
		return nil, err
	}
	cli.Notef(stderr, command, "looking up the NLB's private addresses (interfaces %q) in %s with the AWS CLI", desc, cfg.Region)
	b, err := aws(ctx, "ec2", "describe-network-interfaces", "--region", cfg.Region,
		"--filters", "Name=description,Values="+desc, "--query", onboarding.NLBInterfacesQuery, "--output", "json")
	if err != nil {
		return nil, err
	}
	return onboarding.ParseNLBAddresses(bytes.NewReader(b))
}
