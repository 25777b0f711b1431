// Command bench-freeport prints a loopback port on which nothing listens,
// for a receiver the bench starts next, by testenv's rule: below the
// kernel's ephemeral range, so that no outgoing connection's source port
// takes it before the receiver binds it (a port the kernel picked for
// port 0 was, in a bench run: "address already in use").
package main

import (
	"flag"
	"fmt"
	"io"
	"net"

	"github.com/dicom-ingest/dicom-ingest/shared/cli"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

const command = "bench-freeport"

func main() { cli.Main(command, run) }

func run(args []string, stdout, _ io.Writer) error {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	if err := cli.FlagsOnly(fs); err != nil {
		return err
	}
	addr, err := testenv.PickFreeAddr()
	if err != nil {
		return err
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("split %s: %w", addr, err)
	}
	if _, err := fmt.Fprintln(stdout, port); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}
