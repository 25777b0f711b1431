package filestore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// directStore returns a store writing with direct I/O, skipping the test
// where the test's filesystem does not take it.
func directStore(t *testing.T) *Store {
	t.Helper()
	s := newStore(t)
	if !s.DirectIO() {
		t.Skip("the test directory's filesystem does not take direct I/O")
	}
	return s
}

// oddReader returns its bytes in reads of the given sizes, in turn, as a
// network connection does.
type oddReader struct {
	b     []byte
	sizes []int
	i     int
}

func (r *oddReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(r.b), r.sizes[r.i%len(r.sizes)])
	r.i++
	copy(p, r.b[:n])
	r.b = r.b[n:]
	return n, nil
}

// TestDirectWriteSizes: objects around the block, chunk and ring sizes,
// arriving in reads of odd sizes, are stored byte for byte.
func TestDirectWriteSizes(t *testing.T) {
	s := directStore(t)
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{0, 1, directAlign - 1, directAlign, directAlign + 1,
		directChunk - 1, directChunk, directChunk + directAlign + 3,
		ringSize - 1, ringSize, ringSize + 1, 2*ringSize + directChunk/2, 5<<20 + 12345}
	reads := [][]int{{1 << 20}, {16384}, {1000, 7, 4093, 65537}}
	for i, size := range sizes {
		for j, rs := range reads {
			t.Run(fmt.Sprintf("%d/reads%d", size, j), func(t *testing.T) {
				want := make([]byte, size)
				for k := range want {
					want[k] = byte(rng.Uint32())
				}
				obj := object(fmt.Sprintf("1.2.3.%d.%d", i, j))
				st, err := s.Put(context.Background(), obj, &oddReader{b: want, sizes: rs})
				if err != nil {
					t.Fatal(err)
				}
				if st.Size != int64(size) || st.SHA256 != sum(want) {
					t.Errorf("Stored size %d sha256 %s, want %d %s", st.Size, st.SHA256, size, sum(want))
				}
				if got := readKey(t, s, st.Key); !bytes.Equal(got, want) {
					t.Errorf("read back %d bytes differing from the %d sent", len(got), size)
				}
			})
		}
	}
}

// TestChunkWriterReportsFailures: every job of a writer whose writes fail
// reports the failure, so the Put waiting on any of them fails
// (TestPutUnavailable covers Put itself).
func TestChunkWriterReportsFailures(t *testing.T) {
	s := directStore(t)
	// A descriptor not open for writing.
	fd, err := unix.Open(s.tmp, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	w := startChunkWriter(fd, 2)
	ring := alignedRing()
	w.jobs <- writeJob{p: ring[:directChunk], off: 0}
	w.jobs <- writeJob{p: ring[directChunk : 2*directChunk], off: directChunk}
	close(w.jobs)
	n := 0
	for err := range w.done {
		n++
		if err == nil {
			t.Errorf("write %d to a directory succeeded", n)
		}
	}
	if n != 2 {
		t.Errorf("%d results for 2 jobs", n)
	}
}

func TestContiguous(t *testing.T) {
	ring := alignedRing()
	a := writeJob{p: ring[0:directChunk], off: 0}
	tests := []struct {
		name string
		b    writeJob
		want bool
	}{
		{"next chunk", writeJob{p: ring[directChunk : 2*directChunk], off: directChunk}, true},
		{"next in memory, elsewhere on disk", writeJob{p: ring[directChunk : 2*directChunk], off: 3 * directChunk}, false},
		{"next on disk, elsewhere in memory", writeJob{p: ring[2*directChunk : 3*directChunk], off: directChunk}, false},
		{"wrapped to the ring's start", writeJob{p: ring[0:directChunk], off: directChunk}, false},
	}
	for _, tt := range tests {
		if got := contiguous(a, tt.b); got != tt.want {
			t.Errorf("%s: contiguous = %v, want %v", tt.name, got, tt.want)
		}
	}
	last := writeJob{p: ring[ringSize-directChunk:], off: 0}
	if contiguous(last, writeJob{p: ring[0:directChunk], off: directChunk}) {
		t.Error("the ring's last chunk merged with its first")
	}
}

// TestChunkWriterMergesInOrder: queued chunks, some next to each other in
// the ring and some across its wrap, land at their offsets, with one
// result per chunk.
func TestChunkWriterMergesInOrder(t *testing.T) {
	fd, name, err := openDirectTemp(t.TempDir(), "merge-")
	if err != nil {
		t.Skipf("direct I/O here: %v", err)
	}
	defer unix.Close(fd)
	ring := alignedRing()
	for i := range ring {
		ring[i] = byte(i / directChunk * 37)
	}
	slot := func(i int) []byte { return ring[i*directChunk : (i+1)*directChunk] }
	order := []int{6, 7, 0, 1, 2} // the ring wraps after 7
	w := &chunkWriter{fd: fd, jobs: make(chan writeJob, len(order)), done: make(chan error, len(order))}
	var want []byte
	for k, i := range order {
		w.jobs <- writeJob{p: slot(i), off: int64(k * directChunk)}
		want = append(want, slot(i)...)
	}
	close(w.jobs)
	w.run() // everything is queued: it merges what it can, then returns
	n := 0
	for err := range w.done {
		n++
		if err != nil {
			t.Errorf("result %d: %v", n, err)
		}
	}
	if n != len(order) {
		t.Errorf("%d results for %d chunks", n, len(order))
	}
	got, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("file holds %d bytes differing from the %d written", len(got), len(want))
	}
}
