// Package dicomnettest starts dicomnet servers on a loopback port for tests, in the manner of net/http/httptest.
package dicomnettest

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
)

// Server is a dicomnet.Server listening on 127.0.0.1 with an ephemeral port.
type Server struct {
	*dicomnet.Server
	Addr string // host:port to dial
	done chan error
}

// NewServer starts srv (which must not be serving yet) on 127.0.0.1:0. Call Close when done; with a testing.TB,
// NewServerT registers it as cleanup.
func NewServer(srv *dicomnet.Server) (*Server, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{Server: srv, Addr: l.Addr().String(), done: make(chan error, 1)}
	go func() { s.done <- srv.Serve(l) }()
	return s, nil
}

// NewServerT is NewServer that fails tb on error and closes the server at cleanup.
func NewServerT(tb testing.TB, srv *dicomnet.Server) *Server {
	tb.Helper()
	s, err := NewServer(srv)
	if err != nil {
		tb.Fatalf("dicomnettest: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("dicomnettest: close: %v", err)
		}
	})
	return s
}

// Close shuts the server down, aborting associations still open after 5 seconds, and waits for Serve to return.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.Server.Shutdown(ctx)
	if serr := <-s.done; serr != nil && !errors.Is(serr, dicomnet.ErrServerClosed) {
		return serr
	}
	return err
}
