// Command bench-s3 serves an S3-compatible API so `make bench` can measure
// scp-task's S3 store without AWS: either gofakes3 keeping every object in
// memory (-mode emulator), or a sink that verifies every CRC64NVME as S3
// does and keeps only sizes and checksums (-mode sink), which measures the
// store itself rather than the emulator's own copying and hashing.
//
// -write-latency and -read-latency hold every answer as long as S3 would
// take (log-normal, "P50/P99"): writes (PUT, POST, DELETE) from their last
// request byte, reads (GET, HEAD) to their first response byte. The site
// link bench answers writes after 20 ms / 100 ms: AWS's performance
// guidance puts the median latency of small requests "in the tens of
// milliseconds" (Best Practices Design Patterns: Optimizing Amazon S3
// Performance, "Timeouts and Retries for Latency-Sensitive Applications").
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/dicom-ingest/dicom-ingest/shared/cli"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/test/bench/internal/latency"
)

const command = "bench-s3"

func main() { cli.Main(command, run) }

// run is main without the process: flags in, an S3 API served.
func run(args []string, stdout, _ io.Writer) error {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:9000", "address to serve on")
	bucket := fs.String("bucket", "bench", "bucket to create (emulator mode)")
	mode := fs.String("mode", "emulator", "emulator (gofakes3, in memory) or sink (checksum-verifying, keeps digests only)")
	writeLat := fs.String("write-latency", "", "delay of every write's answer, P50/P99 (e.g. 20ms/100ms), a constant, or none")
	readLat := fs.String("read-latency", "", "delay of every read's first byte, as -write-latency")
	seed := fs.Uint64("seed", 1, "seed of the delays drawn")
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	if err := cli.FlagsOnly(fs); err != nil {
		return err
	}
	writes, err := latency.Parse(*writeLat)
	if err != nil {
		return cli.UsageError(fs, fmt.Errorf("-write-latency: %w", err))
	}
	reads, err := latency.Parse(*readLat)
	if err != nil {
		return cli.UsageError(fs, fmt.Errorf("-read-latency: %w", err))
	}
	var h http.Handler
	switch *mode {
	case "emulator":
		backend := s3mem.New()
		if err := backend.CreateBucket(*bucket); err != nil {
			return fmt.Errorf("create bucket: %w", err)
		}
		h = gofakes3.New(backend, gofakes3.WithTimeSkewLimit(time.Hour)).Server()
	case "sink":
		h = s3test.NewSinkHandler(s3test.WithoutSHA256())
	default:
		return cli.UsageError(fs, fmt.Errorf("-mode: %q is not emulator or sink", *mode))
	}
	h = latency.Handler(h, latency.ByMethod(latency.NewSampler(reads, *seed), latency.NewSampler(writes, *seed+1)))
	srv := &http.Server{Addr: *listen, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	return srv.ListenAndServe()
}
