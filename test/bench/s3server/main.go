// Command bench-s3 serves an in-memory S3-compatible API (gofakes3) on
// loopback so `make bench` can measure scp-task's S3 store without AWS.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9000", "address to serve on")
	bucket := flag.String("bucket", "bench", "bucket to create")
	flag.Parse()
	backend := s3mem.New()
	if err := backend.CreateBucket(*bucket); err != nil {
		fmt.Fprintln(os.Stderr, "bench-s3: create bucket:", err)
		os.Exit(1)
	}
	faker := gofakes3.New(backend, gofakes3.WithTimeSkewLimit(time.Hour))
	srv := &http.Server{Addr: *listen, Handler: faker.Server(), ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
