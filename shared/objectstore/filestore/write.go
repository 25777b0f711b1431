package filestore

import (
	"context"
	"fmt"
	"hash"
	"io"
	"os"
	"unsafe"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/journal"
)

// An object is received into a pooled ring of chunks. Each full chunk is
// handed to a writer goroutine, which writes it while the next ones
// arrive. With direct I/O
// (see Store.DirectIO) the writes go straight to the disk, so that at the
// end of the object only its last chunk, its final partial block and the
// metadata are left for the fsync: with buffered writes the whole object
// waits in the page cache for the fsync, on a disk writing ~1 GB/s 0.5 ms
// of a 512 KiB CT image on every C-STORE's round trip. Direct I/O also
// keeps received objects out of the page cache.
const (
	// ringSize is the per-Put ring: big enough that a typical CT or MR
	// image arrives without waiting for the writer. It is
	// pooled, so memory stays bounded per association.
	ringSize = 1 << 20
	// chunkSize is the unit handed to the writer: small enough that the
	// disk starts early and the last chunk is short, large enough that
	// each write is efficient. Queued chunks that lie next to each other
	// are written together, up to maxWrite.
	chunkSize = 128 << 10
	maxWrite  = 512 << 10
	// directAlign is the alignment direct I/O asks of buffers, offsets and
	// lengths: the largest logical block size in common use.
	directAlign = 4096
	// directLimit is how much of an object goes direct: past it the rest
	// goes through the page cache, written back by the kernel while it
	// arrives and made durable by the same fsync. On a virtual disk the
	// receiving side slows while direct writes are in flight, and a
	// 300 MiB object arrived a third faster written through the page cache
	// (docs/performance.md, Loopback); the images the journal does not
	// take (1 MiB and up) stay direct up to here.
	directLimit = 8 << 20
)

// alignedBuf returns n bytes starting at a multiple of directAlign.
func alignedBuf(n int) []byte {
	b := make([]byte, n+directAlign)
	off := (directAlign - int(uintptr(unsafe.Pointer(&b[0]))%directAlign)) % directAlign
	return b[off : off+n : off+n]
}

// writeJob is n bytes of the ring from chunk slot on, for file offset off.
type writeJob struct {
	slot, n int
	off     int64
}

// follows reports whether b starts where a ends, in the ring and in the
// file, so the two can be written as one.
func (a writeJob) follows(b writeJob) bool {
	return b.slot*chunkSize == a.slot*chunkSize+a.n && b.off == a.off+int64(a.n)
}

// chunkWriter writes jobs from ring to f, in order, on its own goroutine,
// and adds what it writes to sum if set; done receives one result per
// job, in order.
type chunkWriter struct {
	f    *os.File
	ring []byte
	sum  hash.Hash
	jobs chan writeJob
	done chan error
}

func startChunkWriter(f *os.File, ring []byte, sum hash.Hash) *chunkWriter {
	depth := len(ring) / chunkSize
	w := &chunkWriter{f: f, ring: ring, sum: sum, jobs: make(chan writeJob, depth), done: make(chan error, depth)}
	go w.run()
	return w
}

func (w *chunkWriter) run() {
	defer close(w.done)
	var failed error   // once a write fails, every later job reports it
	var held *writeJob // taken while merging, but not next to the write
	for {
		var j writeJob
		if held != nil {
			j, held = *held, nil
		} else {
			var ok bool
			if j, ok = <-w.jobs; !ok {
				return
			}
		}
		// Merge the queued jobs that follow j into one write.
		n := 1
	merge:
		for j.n < maxWrite {
			select {
			case next, ok := <-w.jobs:
				if !ok {
					break merge
				}
				if !j.follows(next) {
					held = &next
					break merge
				}
				j.n += next.n
				n++
			default:
				break merge
			}
		}
		if failed == nil {
			start := j.slot * chunkSize
			if _, err := w.f.WriteAt(w.ring[start:start+j.n], j.off); err != nil {
				failed = err
			}
			if w.sum != nil {
				// While the next chunks arrive: off the receiving path.
				w.sum.Write(w.ring[start : start+j.n])
			}
		}
		for range n {
			w.done <- failed
		}
	}
}

// writeTemp streams an object into a new, fsynced temporary file and
// returns its name and size; on error nothing is left, and size is how
// far the object had come (what it needs at least: a write that finds no
// space tells readiness, see Store.Ready). The object is the
// first filled bytes of ring (whole chunks) followed by the rest of r; ring
// (ringSize bytes, aligned for direct I/O) is the caller's, and no write
// from it is in flight once writeTemp returns. If sum is set, the object's
// bytes are added to it.
func (s *Store) writeTemp(ctx context.Context, r io.Reader, ring []byte, filled int, sum hash.Hash) (tmp string, size int64, err error) {
	f, err := s.createTemp(ObjectTempPrefix, s.direct)
	if err != nil {
		return "", 0, unavailable("put", err)
	}
	tmp = f.Name()
	var off int64 // file offset of the next chunk
	defer func() {
		if f != nil {
			if cerr := f.Close(); cerr != nil && err == nil {
				err = unavailable("put: close", cerr)
			}
		}
		if err != nil {
			s.removeTemp(tmp)
			size = max(size, off)
		}
	}()

	chunks := len(ring) / chunkSize
	w := startChunkWriter(f, ring, sum)
	inflight := 0
	defer func() {
		// Nothing may touch the ring once it is back with the caller.
		close(w.jobs)
		for range w.done {
		}
	}()
	// wait collects the oldest outstanding write.
	wait := func() error {
		inflight--
		if werr := <-w.done; werr != nil {
			return unavailable("put: write", werr)
		}
		return nil
	}
	// drain collects every outstanding write.
	drain := func() error {
		for inflight > 0 {
			if err := wait(); err != nil {
				return err
			}
		}
		return nil
	}
	direct := s.direct
	// toPageCache sends the writes after it through the page cache, once
	// no direct write is in flight.
	toPageCache := func() error {
		if err := drain(); err != nil {
			return err
		}
		if ferr := leaveDirect(f); ferr != nil {
			return unavailable("put: leave direct I/O", ferr)
		}
		direct = false
		return nil
	}

	// The chunks the caller read already go first.
	for slot := 0; slot < filled/chunkSize; slot++ {
		w.jobs <- writeJob{slot: slot, n: chunkSize, off: off}
		inflight++
		off += chunkSize
	}
	for slot := (filled / chunkSize) % chunks; ; slot = (slot + 1) % chunks {
		if inflight == chunks {
			if err := wait(); err != nil {
				return tmp, size, err
			}
		}
		if direct && off >= directLimit {
			// The rest through the page cache.
			if err := toPageCache(); err != nil {
				return tmp, size, err
			}
		}
		n, rerr := fill(ctx, r, ring[slot*chunkSize:(slot+1)*chunkSize])
		if rerr != nil {
			return tmp, size, rerr
		}
		if n == chunkSize {
			w.jobs <- writeJob{slot: slot, n: n, off: off}
			inflight++
			off += int64(n)
			continue
		}
		// The end of the object. With direct I/O only its whole blocks
		// go direct, the rest through the page cache once the direct
		// writes are done.
		whole := n
		if direct {
			whole = n &^ (directAlign - 1)
		}
		if whole > 0 {
			w.jobs <- writeJob{slot: slot, n: whole, off: off}
			inflight++
		}
		if err := drain(); err != nil {
			return tmp, size, err
		}
		size = off + int64(n)
		if whole < n {
			if err := toPageCache(); err != nil {
				return tmp, size, err
			}
			tail := ring[slot*chunkSize+whole : slot*chunkSize+n]
			if _, werr := f.WriteAt(tail, off+int64(whole)); werr != nil {
				return tmp, size, unavailable("put: write", werr)
			}
			if sum != nil {
				sum.Write(tail)
			}
		}
		break
	}
	if err := f.Sync(); err != nil {
		return tmp, size, unavailable("put: sync", err)
	}
	err = f.Close()
	f = nil
	if err != nil {
		return tmp, size, unavailable("put: close", err)
	}
	return tmp, size, nil
}

// fill reads from r until c is full or r ends (journal.Fill), with the
// store's error prefix. It returns len(c) while more may follow, less at
// the end of r.
func fill(ctx context.Context, r io.Reader, c []byte) (int, error) {
	n, err := journal.Fill(ctx, r, c)
	if err != nil {
		return n, fmt.Errorf("filestore: put: %w", err)
	}
	return n, nil
}
