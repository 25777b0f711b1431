package digest

import (
	"bytes"
	"crypto/sha256"
	"testing"
)

func TestBackgroundHashesSlicesInOrder(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 100_000)
	want := sha256.Sum256(data)
	for _, chunk := range []int{1, 7, 4096, 65_536, len(data)} {
		b := Start(sha256.New())
		for off := 0; off < len(data); off += chunk {
			b.Add(data[off:min(off+chunk, len(data))])
			if off%(chunk*queued*3) == 0 {
				b.Wait()
			}
		}
		if got := b.Sum(); !bytes.Equal(got, want[:]) {
			t.Errorf("chunk %d: sum %x, want %x", chunk, got, want)
		}
		b.Stop() // after Sum: no effect
	}
}

func TestWaitLetsTheCallerReuseMemory(t *testing.T) {
	// One buffer, refilled after every Wait: the race detector and the sum
	// both notice a hasher that still reads it.
	buf := make([]byte, 1<<16)
	all := sha256.New()
	b := Start(sha256.New())
	for i := range 50 {
		for j := range buf {
			buf[j] = byte(i * j)
		}
		all.Write(buf)
		b.Add(buf)
		b.Wait()
	}
	if got, want := b.Sum(), all.Sum(nil); !bytes.Equal(got, want) {
		t.Errorf("sum %x, want %x", got, want)
	}
}

func TestStopWithoutSumReleasesEverything(t *testing.T) {
	buf := make([]byte, 1<<20)
	b := Start(sha256.New())
	for range queued {
		b.Add(buf)
	}
	b.Stop()
	for i := range buf {
		buf[i] = 1 // the hasher has let go: no race
	}
	b.Wait() // after Stop: returns at once
	b.Stop()
}
