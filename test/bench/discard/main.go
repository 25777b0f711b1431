// Command bench-discard is `make bench`'s protocol floor: the dicomnet
// server scp-task runs on, with a handler that reads every data set and
// throws it away. It answers success for objects it does not keep, so it
// is a measuring stick for the bench and never a receiver: the gap between
// it and scp-task is what storing costs, and the gap between it and
// storescp is what storescp does with an object.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/dicom-ingest/dicom-ingest/shared/cli"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
)

const command = "bench-discard"

func main() { cli.Main(command, run) }

func run(args []string, stdout, _ io.Writer) error {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:11112", "address to serve DICOM on")
	aeTitle := fs.String("ae-title", "REMOTE_AE", "called AE title to answer to")
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	if err := cli.FlagsOnly(fs); err != nil {
		return err
	}
	srv := &dicomnet.Server{Addr: *listen, AETitle: *aeTitle, Handler: dicomnet.HandlerFunc(discard)}
	return srv.ListenAndServe()
}

// discard reads the data set to its end, as a store would, and keeps none
// of it.
func discard(_ context.Context, _ *dicomnet.CStoreRequest, dataset io.Reader) error {
	if _, err := io.Copy(io.Discard, dataset); err != nil {
		return fmt.Errorf("bench-discard: read data set: %w", err)
	}
	return nil
}
