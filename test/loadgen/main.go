// Command dicom-loadgen sends DICOM Part 10 files to a C-STORE SCP over N
// parallel associations and reports instances/s, MB/s and the p50/p99
// C-STORE round trip. `make bench` runs it against scp-task and against
// DCMTK's storescp on the same corpus.
//
//	dicom-loadgen -addr 127.0.0.1:11112 -aet LOCAL_AE -aec REMOTE_AE -n 8 DIR|FILE…
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/cli"
)

const command = "dicom-loadgen"

// exitSomeFailed is the status of a run that sent everything and had
// some C-STOREs fail (the report says which first).
const exitSomeFailed = 3

func main() { cli.Main(command, runCommand) }

// runCommand is main without the process: flags and files in, the report
// out.
func runCommand(args []string, stdout, _ io.Writer) error {
	var o options
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	cli.Synopsis(fs, command+" [flags] DIR|FILE…")
	fs.StringVar(&o.Addr, "addr", "127.0.0.1:11112", "SCP host:port")
	fs.StringVar(&o.CallingAE, "aet", "LOCAL_AE", "our (calling) AE title")
	fs.StringVar(&o.CalledAE, "aec", "REMOTE_AE", "the SCP's (called) AE title")
	fs.IntVar(&o.Associations, "n", 1, "parallel associations")
	fs.IntVar(&o.Repeat, "repeat", 1, "send the file set this many times")
	fs.BoolVar(&o.Progress, "progress", true, "show a progress bar on stderr")
	fs.StringVar(&o.Label, "label", "", "label for the report")
	fs.StringVar(&o.Timings, "timings", "", "write each success to this `FILE`: SOP Instance UID and the time its C-STORE response arrived (Unix ns), tab-separated")
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return cli.UsageError(fs, errors.New("no DIR or FILE to send"))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	files, err := scan(fs.Args())
	if err != nil {
		return err
	}
	rep, err := run(ctx, o, files)
	if err != nil {
		return err
	}
	if o.Timings != "" {
		if err := os.WriteFile(o.Timings, rep.timings, 0o644); err != nil {
			return fmt.Errorf("-timings: %w", err)
		}
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		_, err = fmt.Fprintln(stdout, rep)
	}
	if err != nil {
		return fmt.Errorf("write the report: %w", err)
	}
	if rep.Failed > 0 {
		return cli.WithStatus(exitSomeFailed, fmt.Errorf("%d C-STOREs failed, %d succeeded", rep.Failed, rep.Instances))
	}
	return nil
}

// Report is what one run measured.
type Report struct {
	Label        string        `json:"label,omitempty"`
	Associations int           `json:"associations"`
	Instances    int           `json:"instances"`
	Failed       int           `json:"failed"`
	Bytes        int64         `json:"bytes"`
	Elapsed      time.Duration `json:"elapsedNs"`
	InstancesPS  float64       `json:"instancesPerSecond"`
	MBPS         float64       `json:"megabytesPerSecond"`
	P50, P99     time.Duration `json:"-"`
	P50ms        float64       `json:"p50ms"`
	P99ms        float64       `json:"p99ms"`
	FirstError   string        `json:"firstError,omitempty"`
	// EndNs is when the last response arrived (Unix ns): a receiver's
	// backlog is measured from it.
	EndNs int64 `json:"endNs"`

	timings []byte // -timings lines
}

func (r Report) String() string {
	s := fmt.Sprintf("%s%d instances (%d failed), %.1f MB over %d association(s) in %.2fs: %.0f instances/s, %.1f MB/s, C-STORE p50 %.2f ms, p99 %.2f ms",
		label(r.Label), r.Instances, r.Failed, float64(r.Bytes)/1e6, r.Associations, r.Elapsed.Seconds(), r.InstancesPS, r.MBPS, r.P50ms, r.P99ms)
	if r.FirstError != "" {
		s += "\nfirst error: " + r.FirstError
	}
	return s
}

func label(l string) string {
	if l == "" {
		return ""
	}
	return l + ": "
}
