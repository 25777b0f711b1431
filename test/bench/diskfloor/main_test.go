//go:build linux

package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestRunStoresEveryFile: the floor writes what the file store would, byte
// for byte, whatever the size (empty, partial blocks, several maximal
// writes) and the number of workers, and leaves no temporary file.
func TestRunStoresEveryFile(t *testing.T) {
	sizes := []int{0, 1, align - 1, align, align + 1, 3*align + 5, 2*maxWrite + 3}
	corpus := t.TempDir()
	want := map[int][]byte{}
	rng := rand.New(rand.NewPCG(1, 2))
	for i, n := range sizes {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		want[n] = b
		if err := os.WriteFile(filepath.Join(corpus, fmt.Sprintf("f%d", i)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, workers := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d workers", workers), func(t *testing.T) {
			store := filepath.Join(t.TempDir(), "store")
			rep, err := run(store, corpus, workers)
			if err != nil {
				t.Fatal(err)
			}
			var total int64
			for _, n := range sizes {
				total += int64(n)
			}
			if rep.Instances != len(sizes) || rep.Bytes != total || rep.Associations != workers || rep.InstancesPS <= 0 {
				t.Errorf("report %+v, want %d instances, %d bytes, %d workers", rep, len(sizes), total, workers)
			}
			stored, err := os.ReadDir(filepath.Join(store, "objects"))
			if err != nil {
				t.Fatal(err)
			}
			if len(stored) != len(sizes) {
				t.Fatalf("%d objects stored, want %d", len(stored), len(sizes))
			}
			for _, e := range stored {
				got, err := os.ReadFile(filepath.Join(store, "objects", e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				if w, ok := want[len(got)]; !ok || !bytes.Equal(got, w) {
					t.Errorf("object %s (%d bytes) is not one of the corpus files", e.Name(), len(got))
				}
			}
			if left, err := os.ReadDir(filepath.Join(store, ".tmp")); err != nil || len(left) != 0 {
				t.Errorf("temporary directory holds %d files (%v)", len(left), err)
			}
		})
	}
}

func TestRunRefusesAnEmptyCorpus(t *testing.T) {
	if _, err := run(filepath.Join(t.TempDir(), "store"), t.TempDir(), 1); err == nil {
		t.Error("run over an empty corpus: no error")
	}
}
