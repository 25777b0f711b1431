package testenv

import (
	"log"
	"net"
	"net/http"
	"testing"
)

// PanicUID is the UID the handler PanicServed serves panics with, which no
// log line may tell (panicvalue's rule).
const PanicUID = "1.2.826.0.1.3680043.9.7777.42"

// PanicServed builds a server with newServer (a server's own constructor:
// the handler to serve and a loopback listener in, the server and the
// listener to serve out), its handler panicking with a string naming
// PanicUID, serves one request, and returns what net/http wrote to the
// server's ErrorLog (which it replaces: the text is net/http's whatever
// logger takes it) once the server is closed (the panic's line is written
// before the connection closes).
func PanicServed(t *testing.T, newServer func(http.Handler, net.Listener) (*http.Server, net.Listener)) string {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, ln := newServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("no study " + PanicUID) }), inner)
	var b LogBuffer
	srv.ErrorLog = log.New(&b, "", 0)
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	if resp, err := http.Get("http://" + inner.Addr().String() + "/"); err == nil {
		resp.Body.Close()
		t.Errorf("a handler's panic answered %s", resp.Status)
	}
	srv.Close()
	return b.String()
}
