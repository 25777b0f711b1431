// Command bench-freeport prints a loopback port on which nothing listens,
// for a receiver the bench starts next, by testenv's rule: below the
// kernel's ephemeral range, so that no outgoing connection's source port
// takes it before the receiver binds it (a port the kernel picked for
// port 0 was, in a bench run: "address already in use").
package main

import (
	"fmt"
	"net"
	"os"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

func main() {
	addr, err := testenv.PickFreeAddr()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-freeport:", err)
		os.Exit(1)
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-freeport:", err)
		os.Exit(1)
	}
	fmt.Println(port)
}
