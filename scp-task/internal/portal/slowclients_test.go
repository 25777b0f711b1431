package portal

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// zeros is a stored object of n zero bytes whose Close is seen: the object
// handler has returned.
type zeros struct {
	n      int64
	closed chan struct{}
	noRanges
}

// noRanges is a test's object store that serves objects whole only: a
// bulk data URI's range or bytes is an error.
type noRanges struct{}

func (noRanges) Head(context.Context, string) (pipeline.ObjectInfo, error) {
	return pipeline.ObjectInfo{}, errors.New("test: no Head")
}

func (noRanges) OpenRange(context.Context, string, int64, int64) (io.ReadCloser, error) {
	return nil, errors.New("test: no ranges")
}

func (z zeros) Open(context.Context, string) (io.ReadCloser, error) {
	return readCloser{io.LimitReader(zeroReader{}, z.n), z.closed}, nil
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

type readCloser struct {
	io.Reader
	closed chan struct{}
}

func (r readCloser) Close() error {
	close(r.closed)
	return nil
}

const objectPath = "/objects/incoming/2026/11/26/1.2.3/1.2.3.1/1.2.3.1.1.dcm"

// TestSlowClients: a connection is held only while its client takes part.
// The portal holds few connections (descriptors.PortalConnections), and
// each of these held one for ever: a request declaring a body it never
// sent (the server waited to discard the body before answering, and, once
// it answered and said it would close, still read it before closing), and a
// download the client stopped reading (nothing bounded the write). A
// download read slowly but steadily goes on past the stall.
func TestSlowClients(t *testing.T) {
	const stall = 300 * time.Millisecond
	start := func(t *testing.T, size int64, stall time.Duration) (addr string, handlerDone chan struct{}) {
		z := zeros{n: size, closed: make(chan struct{})}
		srv := httptest.NewServer((&Server{Objects: z, WriteStall: stall, Logger: errorLogger(t)}).Handler())
		t.Cleanup(srv.Close)
		return srv.Listener.Addr().String(), z.closed
	}
	dial := func(t *testing.T, addr, request string) net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, request); err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, tc := range []struct{ name, headers string }{
		{"declared body never sent", "Content-Length: 1000\r\n"},
		{"chunked body never ended", "Transfer-Encoding: chunked\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := start(t, 10, stall)
			c := dial(t, addr, "GET "+objectPath+" HTTP/1.1\r\nHost: 127.0.0.1\r\n"+tc.headers+"\r\n")
			if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || !resp.Close {
				t.Errorf("answer %s, close %v; want 400 and the connection closed", resp.Status, resp.Close)
			}
			// Closed by the server, not merely said to be: net/http read
			// the body it never got after answering, and held the
			// connection for ever.
			if rest, err := io.ReadAll(br); len(rest) != 0 || err != nil {
				t.Errorf("after the answer: read %q, %v; want the connection closed by the server (EOF)", rest, err)
			}
		})
	}
	t.Run("download no longer read", func(t *testing.T) {
		addr, done := start(t, 256<<20, stall)
		dial(t, addr, "GET "+objectPath+" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the object handler still writes to a client that stopped reading 10 s ago")
		}
	})
	t.Run("download read slowly", func(t *testing.T) {
		// Pauses between reads a fifteenth of the stall: a loaded
		// machine's scheduler may add seconds to them (a CI run under
		// load took 850 ms a read) without the write deadline passing,
		// and all of them outlast it.
		const size, stall = 64 << 20, 3 * time.Second
		addr, _ := start(t, size, stall)
		c := dial(t, addr, "GET "+objectPath+" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		began := time.Now()
		var got int64
		for {
			n, err := io.CopyN(io.Discard, resp.Body, 4<<20)
			got += n
			if err != nil {
				break
			}
			time.Sleep(stall / 15)
		}
		if got != size || time.Since(began) < stall {
			t.Errorf("read %d of %d bytes in %v", got, size, time.Since(began))
		}
	})
}

// countingOpener is a stored object whose bytes read are counted.
type countingOpener struct {
	n    int64
	read *atomic.Int64
}

func (o countingOpener) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	return o.OpenRange(ctx, key, 0, -1)
}

// Head is the object's size; its bytes are named by no checksum.
func (o countingOpener) Head(_ context.Context, key string) (pipeline.ObjectInfo, error) {
	return pipeline.ObjectInfo{Key: key, Size: o.n}, nil
}

func (o countingOpener) OpenRange(_ context.Context, _ string, offset, length int64) (io.ReadCloser, error) {
	if length < 0 {
		length = o.n - offset
	}
	return io.NopCloser(countingReader{io.LimitReader(zeroReader{}, min(length, o.n-offset)), o.read}), nil
}

type countingReader struct {
	r    io.Reader
	read *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// TestHeadReadsNoObject: a HEAD of an object answers its headers without
// reading the object, which a GET streams whole.
func TestHeadReadsNoObject(t *testing.T) {
	const size = 64 << 20
	for _, tc := range []struct {
		method string
		want   int64
	}{{http.MethodHead, 0}, {http.MethodGet, size}} {
		t.Run(tc.method, func(t *testing.T) {
			var read atomic.Int64
			srv := httptest.NewServer((&Server{Objects: countingOpener{size, &read}, Logger: errorLogger(t)}).Handler())
			defer srv.Close()
			req, err := http.NewRequest(tc.method, srv.URL+objectPath, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/dicom" {
				t.Errorf("%s: %s, Content-Type %q; want 200 application/dicom", tc.method, resp.Status, resp.Header.Get("Content-Type"))
			}
			if got := read.Load(); got != tc.want {
				t.Errorf("%s read %d bytes of the object, want %d", tc.method, got, tc.want)
			}
		})
	}
}
