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
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	var o options
	flag.StringVar(&o.Addr, "addr", "127.0.0.1:11112", "SCP host:port")
	flag.StringVar(&o.CallingAE, "aet", "LOCAL_AE", "our (calling) AE title")
	flag.StringVar(&o.CalledAE, "aec", "REMOTE_AE", "the SCP's (called) AE title")
	flag.IntVar(&o.Associations, "n", 1, "parallel associations")
	flag.IntVar(&o.Repeat, "repeat", 1, "send the file set this many times")
	flag.BoolVar(&o.Progress, "progress", true, "show a progress bar on stderr")
	flag.StringVar(&o.Label, "label", "", "label for the report")
	flag.StringVar(&o.Timings, "timings", "", "write each success to this `FILE`: SOP Instance UID and the time its C-STORE response arrived (Unix ns), tab-separated")
	jsonOut := flag.Bool("json", false, "print the report as JSON")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: dicom-loadgen [flags] DIR|FILE…\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	files, err := scan(flag.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, "dicom-loadgen:", err)
		os.Exit(1)
	}
	rep, err := run(ctx, o, files)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dicom-loadgen:", err)
		os.Exit(1)
	}
	if o.Timings != "" {
		if err := os.WriteFile(o.Timings, rep.timings, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "dicom-loadgen:", err)
			os.Exit(1)
		}
	}
	if *jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(os.Stderr, "dicom-loadgen:", err)
			os.Exit(1)
		}
	} else {
		fmt.Println(rep)
	}
	if rep.Failed > 0 {
		os.Exit(3)
	}
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
