// Command bench-s3 serves an S3-compatible API on loopback so `make bench`
// can measure scp-task's S3 store without AWS: either gofakes3 keeping
// every object in memory (-mode emulator), or a sink that verifies every
// CRC64NVME as S3 does and keeps only sizes and checksums (-mode sink),
// which measures the store itself rather than the emulator's own copying
// and hashing.
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9000", "address to serve on")
	bucket := flag.String("bucket", "bench", "bucket to create (emulator mode)")
	mode := flag.String("mode", "emulator", "emulator (gofakes3, in memory) or sink (checksum-verifying, keeps digests only)")
	flag.Parse()
	var h http.Handler
	switch *mode {
	case "emulator":
		backend := s3mem.New()
		if err := backend.CreateBucket(*bucket); err != nil {
			fmt.Fprintln(os.Stderr, "bench-s3: create bucket:", err)
			os.Exit(1)
		}
		h = gofakes3.New(backend, gofakes3.WithTimeSkewLimit(time.Hour)).Server()
	case "sink":
		h = s3test.NewSinkHandler(s3test.WithoutSHA256())
	default:
		fmt.Fprintf(os.Stderr, "bench-s3: unknown -mode %q\n", *mode)
		os.Exit(2)
	}
	srv := &http.Server{Addr: *listen, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-s3:", err)
		os.Exit(1)
	}
}
