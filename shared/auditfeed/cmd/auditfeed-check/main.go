// Command auditfeed-check reads the audit feed's secrets by the rule the
// auditfeed function reads them with at its start (auditfeed.TLSConfig):
// the collector CA, PEM certificates and nothing else, at least one, each
// of a key the rule of every certificate allows (tlstrust.ParseCAs); and,
// with -client, our client certificate and its key in one PEM file. A
// secret it refuses stops the function at start, and the audit records
// wait in the table's stream (24 hours); a client certificate only expired
// or not yet valid does not (the function starts, and each delivery to a
// collector that asks for it fails until it is valid): it is taken with a
// warning naming its dates. Check a secret before deploying
// (docs/operations/deploy.md, "Upgrades"):
//
//	aws secretsmanager get-secret-value --secret-id <caSecretArn> --query SecretString --output text |
//	  auditfeed-check -
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed"
	"github.com/dicom-ingest/dicom-ingest/shared/cli"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

func main() {
	cli.Main("auditfeed-check", func(args []string, stdout, _ io.Writer) error {
		return run(args, os.Stdin, stdout)
	})
}

func run(args []string, stdin io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet("auditfeed-check", flag.ContinueOnError)
	cli.Synopsis(fs, "auditfeed-check [-client FILE] CA-FILE (- for standard input)")
	client := fs.String("client", "", "PEM file of our client certificate and its key (the clientCertificateSecretArn secret)")
	if err := cli.Parse(fs, args, out); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return cli.UsageError(fs, errors.New("one CA-FILE is required (the caSecretArn secret's value; - for standard input)"))
	}
	read := func(name string) ([]byte, error) {
		if name == "-" {
			return io.ReadAll(stdin)
		}
		return os.ReadFile(name)
	}
	ca, err := read(fs.Arg(0))
	if err != nil {
		return err
	}
	var pems []byte
	if *client != "" {
		if pems, err = read(*client); err != nil {
			return err
		}
	}
	// The host is the collector's name, which only a connection checks.
	cfg, err := auditfeed.TLSConfig("collector", ca, pems, pems)
	if errors.Is(err, tlstrust.ErrNotValidNow) && cfg != nil {
		// As the function takes it (its CertificateNotValidLog): a warning, not a refusal.
		if _, err := fmt.Fprintf(out, "warning: %v: the auditfeed function starts, and deliveries to a collector that asks for a client certificate fail until it is valid\n", err); err != nil {
			return err
		}
		err = nil
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, "ok: the auditfeed function takes it")
	return err
}
