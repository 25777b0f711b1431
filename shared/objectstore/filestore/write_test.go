package filestore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

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

// TestWriteSizes: objects around the block, chunk and ring sizes and the
// end of direct writes (directLimit), arriving in reads of odd sizes, are
// stored byte for byte, with direct I/O (where the test's filesystem takes
// it) and without.
func TestWriteSizes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{0, 1, directAlign - 1, directAlign, directAlign + 1,
		chunkSize - 1, chunkSize, chunkSize + directAlign + 3,
		ringSize - 1, ringSize, ringSize + 1, 2*ringSize + chunkSize/2, 5<<20 + 12345,
		directLimit - 1, directLimit + chunkSize + 5, 2*directLimit + directAlign - 1}
	reads := [][]int{{1 << 20}, {16384}, {1000, 7, 4093, 65537}}
	for _, mode := range writeModes {
		s := newStore(t, mode.opts...)
		t.Logf("%s: direct I/O %v", mode.name, s.DirectIO())
		for i, size := range sizes {
			for j, rs := range reads {
				t.Run(fmt.Sprintf("%s/%d/reads%d", mode.name, size, j), func(t *testing.T) {
					want := make([]byte, size)
					for k := range want {
						want[k] = byte(rng.Uint32())
					}
					obj := object(fmt.Sprintf("1.2.3.%d.%d", i, j))
					// One of the reads asks for the checksum, which the
					// store takes as it writes.
					withSum := j == 1
					st, err := s.PutWith(context.Background(), obj, &oddReader{b: want, sizes: rs}, Hooks{Checksum: withSum})
					if err != nil {
						t.Fatal(err)
					}
					if wantSum := sum(want); withSum && st.CRC64NVME != wantSum || !withSum && st.CRC64NVME != "" {
						t.Errorf("Stored CRC-64/NVME %q (asked: %v), want %q", st.CRC64NVME, withSum, wantSum)
					}
					if st.Size != int64(size) {
						t.Errorf("Stored size %d, want %d", st.Size, size)
					}
					if got := readKey(t, s, st.Key); !bytes.Equal(got, want) {
						t.Errorf("read back %d bytes differing from the %d sent", len(got), size)
					}
				})
			}
		}
	}
}

// TestChunkWriterReportsFailures: every job of a writer whose writes fail
// reports the failure, so the Put waiting on any of them fails
// (TestPutUnavailable covers Put itself).
func TestChunkWriterReportsFailures(t *testing.T) {
	// A file not open for writing.
	name := filepath.Join(t.TempDir(), "read-only")
	if err := os.WriteFile(name, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := startChunkWriter(f, alignedBuf(ringSize), nil)
	w.jobs <- writeJob{slot: 0, n: chunkSize, off: 0}
	w.jobs <- writeJob{slot: 1, n: chunkSize, off: chunkSize}
	close(w.jobs)
	n := 0
	for err := range w.done {
		n++
		if err == nil {
			t.Errorf("write %d to a read-only file succeeded", n)
		}
	}
	if n != 2 {
		t.Errorf("%d results for 2 jobs", n)
	}
}

func TestFollows(t *testing.T) {
	a := writeJob{slot: 0, n: chunkSize, off: 0}
	tests := []struct {
		name string
		b    writeJob
		want bool
	}{
		{"next chunk", writeJob{slot: 1, n: chunkSize, off: chunkSize}, true},
		{"next in the ring, elsewhere in the file", writeJob{slot: 1, n: chunkSize, off: 3 * chunkSize}, false},
		{"next in the file, elsewhere in the ring", writeJob{slot: 2, n: chunkSize, off: chunkSize}, false},
		{"wrapped to the ring's start", writeJob{slot: 0, n: chunkSize, off: chunkSize}, false},
	}
	for _, tt := range tests {
		if got := a.follows(tt.b); got != tt.want {
			t.Errorf("%s: follows = %v, want %v", tt.name, got, tt.want)
		}
	}
	last := writeJob{slot: ringSize/chunkSize - 1, n: chunkSize, off: 0}
	if last.follows(writeJob{slot: 0, n: chunkSize, off: chunkSize}) {
		t.Error("the ring's last chunk merged with its first")
	}
	partial := writeJob{slot: 0, n: directAlign, off: 0}
	if partial.follows(writeJob{slot: 1, n: chunkSize, off: directAlign}) {
		t.Error("a short chunk merged with the next slot, leaving a gap in the ring")
	}
}

// TestChunkWriterMergesInOrder: queued chunks, some next to each other in
// the ring and some across its wrap, land at their offsets, with one
// result per chunk.
func TestChunkWriterMergesInOrder(t *testing.T) {
	for _, mode := range writeModes {
		t.Run(mode.name, func(t *testing.T) {
			s := newStore(t, mode.opts...)
			f, err := s.createTemp("merge-", s.DirectIO())
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			ring := alignedBuf(ringSize)
			for i := range ring {
				ring[i] = byte(i / chunkSize * 37)
			}
			order := []int{6, 7, 0, 1, 2} // the ring wraps after 7
			w := &chunkWriter{f: f, ring: ring, jobs: make(chan writeJob, len(order)), done: make(chan error, len(order))}
			var want []byte
			for k, slot := range order {
				w.jobs <- writeJob{slot: slot, n: chunkSize, off: int64(k * chunkSize)}
				want = append(want, ring[slot*chunkSize:(slot+1)*chunkSize]...)
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
			got, err := os.ReadFile(f.Name())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("file holds %d bytes differing from the %d written", len(got), len(want))
			}
		})
	}
}
