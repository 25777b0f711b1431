package dicomnet_test

import (
	"context"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
)

// zeros is an endless reader of zero bytes that counts what was read.
type zeros struct{ n atomic.Int64 }

func (z *zeros) Read(p []byte) (int, error) {
	clear(p)
	z.n.Add(int64(len(p)))
	return len(p), nil
}

// TestStreamingAllocations stores a 256 MiB object: the whole path (client, server, handler) must allocate
// a bounded amount, independent of the object size.
func TestStreamingAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 256 MiB")
	}
	const size = 256 << 20
	var got int64
	srv := dicomnettest.NewServerT(t, &dicomnet.Server{Handler: dicomnet.HandlerFunc(func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
		buf := make([]byte, 32<<10)
		n, err := io.CopyBuffer(io.Discard, r, buf)
		got = n
		return err
	})})
	ctx := context.Background()
	a, err := dicomnet.Dial(ctx, srv.Addr, storeCfg(0))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release(ctx)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	st, err := a.Store(ctx, dicomuid.CTImageStorage, "1.2.3", "", io.LimitReader(&zeros{}, size))
	if err != nil || !st.IsSuccess() {
		t.Fatal(st, err)
	}
	runtime.ReadMemStats(&after)
	if got != size {
		t.Fatalf("received %d bytes", got)
	}
	t.Logf("allocated %d KiB while streaming %d MiB", (after.TotalAlloc-before.TotalAlloc)>>10, size>>20)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Errorf("allocated %d bytes to stream %d", alloc, size)
	}
}

// TestBackpressure: while the handler does not read, the server does not read the socket either, so the sender
// stalls once the kernel buffers are full instead of the server buffering the object.
func TestBackpressure(t *testing.T) {
	release := make(chan struct{})
	srv := dicomnettest.NewServerT(t, &dicomnet.Server{Handler: dicomnet.HandlerFunc(func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
		<-release
		_, err := io.Copy(io.Discard, r)
		return err
	})})
	ctx := context.Background()
	a, err := dicomnet.Dial(ctx, srv.Addr, storeCfg(0))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release(ctx)
	src := &zeros{}
	done := make(chan error, 1)
	go func() {
		_, err := a.Store(ctx, dicomuid.CTImageStorage, "1.2.3", "", io.LimitReader(src, 256<<20))
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	sent := src.n.Load()
	t.Logf("sender pushed %d KiB before stalling", sent>>10)
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Loopback socket buffers hold a few MiB; the server itself holds at most its 64 KiB read buffer.
	if sent > 32<<20 {
		t.Errorf("sender pushed %d MiB while the handler was not reading", sent>>20)
	}
}

func TestServeConnContextCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &dicomnet.Server{}
	c1, c2 := pipeTCP(t)
	done := make(chan struct{})
	go func() { s.ServeConn(ctx, c1); close(done) }()
	p := dicomnettest.NewParrot(t, c2)
	p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
	cancel()
	p.ExpectAbort(0, 0)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("ServeConn did not return after cancel")
	}
}

func TestClose(t *testing.T) {
	s := &dicomnet.Server{}
	srv := dicomnettest.NewServerT(t, s)
	p := dicomnettest.DialParrot(t, srv.Addr)
	p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	p.ExpectAbort(0, 0)
	waitActive(t, s, 0)
}

// pipeTCP returns both ends of a loopback TCP connection.
func pipeTCP(t *testing.T) (server, client net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		ch <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-ch
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}
