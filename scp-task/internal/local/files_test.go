package local

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/filestore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// TestHeadChecksum: Head gives the pipeline the object's content identity
// as S3 would, its CRC-64/NVME, reading the file when the SCP's store did
// not hand one over; an object stored by an earlier version keeps the
// SHA-256 its hand-off recorded (64 hex digits), and is not read.
func TestHeadChecksum(t *testing.T) {
	ctx := context.Background()
	store, db, f := newTestFiles(t)
	in := instance("1.2.826.0.1.3680043.2.1.1", "1.2.826.0.1.3680043.2.1.1.1")
	body := in.Build()
	_, fileCRC := objectstore.ContentChecksum(body)
	sha := strings.Repeat("ab12", 16)

	tests := []struct {
		name       string
		handoff    map[string]string // nil: no hand-off record at all
		wantCRC    string
		wantSHA256 string
		wantMeta   map[string]string // other entries Head must report
	}{
		{"hand-off without a checksum", map[string]string{"calling-ae": "LOCAL_AE"}, fileCRC, "", map[string]string{"calling-ae": "LOCAL_AE"}},
		{"hand-off with an earlier version's SHA-256", map[string]string{"calling-ae": "LOCAL_AE", "sha256": sha}, "", sha, map[string]string{"calling-ae": "LOCAL_AE"}},
		// A sha256 value in no earlier version's form is no identity
		// (objectstore.LegacySHA256): the CRC is taken, as for an object
		// with none. Without it the pipeline named the object by its
		// ETag, which the file store does not give: every such object
		// was "etag-", one content, and its identity changed once read.
		{"hand-off with a sha256 value too short", map[string]string{"calling-ae": "LOCAL_AE", "sha256": "ab12"}, fileCRC, "ab12", map[string]string{"calling-ae": "LOCAL_AE"}},
		{"hand-off with a sha256 value not hex", map[string]string{"calling-ae": "LOCAL_AE", "sha256": "x" + sha[1:]}, fileCRC, "x" + sha[1:], map[string]string{"calling-ae": "LOCAL_AE"}},
		{"no hand-off record", nil, fileCRC, "", map[string]string{"recovered": "true", "calling-ae": "LOCAL_AE"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := "incoming/2026/11/27/1.2/1.2.3/1.2.3." + string(rune('1'+i)) + ".dcm"
			placeFile(t, store.Root(), key, body)
			if tt.handoff != nil {
				if _, err := db.Handoff().Enqueue(ctx, key, time.Now(), tt.handoff); err != nil {
					t.Fatal(err)
				}
			}
			info, err := f.Head(ctx, key)
			if err != nil {
				t.Fatalf("Head: %v", err)
			}
			if info.ChecksumCRC64NVME != tt.wantCRC || info.Metadata["sha256"] != tt.wantSHA256 {
				t.Errorf("CRC64NVME %q and sha256 %q, want %q and %q",
					info.ChecksumCRC64NVME, info.Metadata["sha256"], tt.wantCRC, tt.wantSHA256)
			}
			for k, v := range tt.wantMeta {
				if got := info.Metadata[k]; got != v {
					t.Errorf("metadata %s = %q, want %q", k, got, v)
				}
			}
			if info.Size != int64(len(body)) {
				t.Errorf("size %d, want %d", info.Size, len(body))
			}
		})
	}
}

// TestHeadKeepsChecksum: Head reads an object to checksum it at most once.
// After the pipeline has processed an object it keeps the file store's
// checksum, and after a restart (none handed over) the one it took: every
// bulk data request of the portal Heads the object, and read all of it
// each time. The evidence is stat-free: the file's bytes are replaced
// after the first Head, and the second reports the checksum of the first.
func TestHeadKeepsChecksum(t *testing.T) {
	ctx := context.Background()
	store, db, f := newTestFiles(t)
	body := instance("1.2.826.0.1.3680043.2.1.2", "1.2.826.0.1.3680043.2.1.2.1").Build()
	_, crc := objectstore.ContentChecksum(body)
	other := append([]byte(nil), body...)
	other[len(other)-1] ^= 0xff
	if _, otherCRC := objectstore.ContentChecksum(other); otherCRC == crc {
		t.Fatal("test objects share a checksum")
	}

	tests := []struct {
		name    string
		arrived bool // the file store handed its checksum over, and the pipeline processed the object
	}{
		{"processed by the pipeline", true},
		{"after a restart", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := "incoming/2026/11/27/1.2/1.2.4/1.2.4." + string(rune('1'+i)) + ".dcm"
			path := placeFile(t, store.Root(), key, body)
			if _, err := db.Handoff().Enqueue(ctx, key, time.Now(), map[string]string{"calling-ae": "LOCAL_AE"}); err != nil {
				t.Fatal(err)
			}
			if tt.arrived {
				f.sums.store(key, crc)
				f.sums.processed(key)
			}
			for n := range 2 {
				info, err := f.Head(ctx, key)
				if err != nil {
					t.Fatalf("Head %d: %v", n+1, err)
				}
				if info.ChecksumCRC64NVME != crc {
					t.Fatalf("Head %d: CRC64NVME %q, want %q: the file was read", n+1, info.ChecksumCRC64NVME, crc)
				}
				if err := os.WriteFile(path, other, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestHeadOfCopy: Head reports a quarantine copy with the metadata its
// Copy recorded, and the source it was copied from with the hand-off's
// (the copy's record is looked up only for keys under quarantine/).
func TestHeadOfCopy(t *testing.T) {
	ctx := context.Background()
	store, db, f := newTestFiles(t)
	src, dst := "incoming/2026/11/27/1.2/1.2.3/1.2.3.1.dcm", "quarantine/2026/11/27/1.2/1.2.3/1.2.3.1.dcm"
	placeFile(t, store.Root(), src, instance("1.2.3", "1.2.3.1").Build())
	if _, err := db.Handoff().Enqueue(ctx, src, time.Now(), map[string]string{"calling-ae": "LOCAL_AE", "sha256": "ab12"}); err != nil {
		t.Fatal(err)
	}
	err := db.InTx(ctx, nil, func(tx *localstore.Tx) error {
		return (&txFiles{files: f, tx: tx}).Copy(ctx, pipeline.ObjectInfo{Key: src}, dst, map[string]string{"quarantined": "true"})
	})
	if err != nil {
		t.Fatalf("Copy: %v", err)
	}
	for _, tt := range []struct {
		key             string
		wantQuarantined string
	}{{src, ""}, {dst, "true"}} {
		info, err := f.Head(ctx, tt.key)
		if err != nil {
			t.Fatalf("Head %s: %v", tt.key, err)
		}
		if got := info.Metadata["quarantined"]; got != tt.wantQuarantined {
			t.Errorf("Head %s: quarantined = %q, want %q", tt.key, got, tt.wantQuarantined)
		}
		if got := info.Metadata["calling-ae"]; got != "LOCAL_AE" {
			t.Errorf("Head %s: calling-ae = %q, want the hand-off's", tt.key, got)
		}
	}
}

// placeFile writes body as the file of key under root, as the file store
// places an object, and returns its path.
func placeFile(t *testing.T, root, key string, body []byte) string {
	t.Helper()
	path := filepath.Join(root, filepath.FromSlash(key))
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// newTestFiles opens a database and a file store in a new directory, and
// the pipeline's files on them.
func newTestFiles(t *testing.T) (*filestore.Store, *localstore.DB, *files) {
	t.Helper()
	dir := t.TempDir()
	db, err := localstore.Open(context.Background(), filepath.Join(dir, "local.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	})
	store, err := filestore.New(filepath.Join(dir, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	return store, db, &files{root: store.Root(), db: db, held: newHeldObjects()}
}

// TestOpenDirectory: a key naming one of the store's directories is not
// found; it was opened, and the portal served it as an empty object.
func TestOpenDirectory(t *testing.T) {
	ctx := context.Background()
	store, _, f := newTestFiles(t)
	key := "incoming/2026/11/27/1.2/1.2.3/1.2.3.1.dcm"
	path := filepath.Join(store.Root(), filepath.FromSlash(key))
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, instance("1.2.3", "1.2.3.1").Build(), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"incoming/2026", "incoming/2026/11/27/1.2/1.2.3"} {
		if r, err := f.Open(ctx, dir); !errors.Is(err, pipeline.ErrNotFound) {
			if r != nil {
				_ = r.Close()
			}
			t.Errorf("Open %s = %v, want not found", dir, err)
		}
	}
	r, err := f.Open(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	_ = r.Close()
}

// TestRebuildMetadataNamesTheSender: an object whose hand-off was lost in
// a crash gets its calling AE back from the file: the Sending AE Title the
// SCP writes now (its Source AE Title is ours, the AE that wrote the
// file), with the called AE from the Receiving AE Title; a file written
// before names the sender in its Source AE Title.
func TestRebuildMetadataNamesTheSender(t *testing.T) {
	tests := []struct {
		name                       string
		source, sending, receiving string
		wantCalling, wantCalled    string
	}{
		{"as written now", "REMOTE_AE", "LOCAL_AE", "REMOTE_AE", "LOCAL_AE", "REMOTE_AE"},
		{"written before the Sending AE Title", "LOCAL_AE", "", "", "LOCAL_AE", ""},
		{"written now for a blank calling AE", "REMOTE_AE", "", "REMOTE_AE", "", "REMOTE_AE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := instance("1.2.826.0.1.3680043.2.1.1", "1.2.826.0.1.3680043.2.1.1.1")
			in.SourceAE, in.SendingAE, in.ReceivingAE = tt.source, tt.sending, tt.receiving
			p := filepath.Join(t.TempDir(), "x.dcm")
			if err := os.WriteFile(p, in.Build(), 0o600); err != nil {
				t.Fatal(err)
			}
			md, err := rebuildMetadata(p, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if md[objectstore.MetaCallingAE] != tt.wantCalling || md[objectstore.MetaCalledAE] != tt.wantCalled || md[objectstore.MetaRecovered] != "true" {
				t.Errorf("rebuilt %v; want calling AE %q, called AE %q", md, tt.wantCalling, tt.wantCalled)
			}
		})
	}
}

// TestWriteCutShortLeavesNothingAfterTheStart: a commitment result (or a
// quarantine copy) whose write is cut short, the process killed with its
// temporary file written, leaves nothing the next start does not remove:
// the temporary file is in the file store's temporary directory, which
// filestore.New empties. It was beside its file (.<name>.<random>.tmp in
// commitment/results/), where no start looks, and stayed there for good.
func TestWriteCutShortLeavesNothingAfterTheStart(t *testing.T) {
	for _, key := range []string{pipeline.CommitmentResultsPrefix + "tx01.json", "quarantine/2026/01/01/obj-1.dcm"} {
		t.Run(key, func(t *testing.T) {
			store, _, f := newTestFiles(t)
			pr, pw := io.Pipe()
			done := make(chan error, 1)
			go func() { done <- f.writeFile(key, pr) }()
			if _, err := pw.Write([]byte(`{"transactionUID":`)); err != nil {
				t.Fatal(err)
			}
			// The write is under way, its first bytes in the temporary file: a kill now leaves it.
			var left []string
			err := filepath.WalkDir(store.Root(), func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.IsDir() && d.Name() == filestore.JournalDir {
					return fs.SkipDir
				}
				if err == nil && !d.IsDir() {
					left = append(left, p)
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			// The next start.
			if err := store.Close(); err != nil {
				t.Fatal(err)
			}
			next, err := filestore.New(store.Root())
			if err != nil {
				t.Fatal(err)
			}
			if err := next.Close(); err != nil {
				t.Fatal(err)
			}
			for _, p := range left {
				if _, err := os.Stat(p); err == nil {
					t.Errorf("the start left %s, the cut write's temporary file", p)
				}
			}
			if len(left) != 1 {
				t.Errorf("files under way: %v, want the temporary file alone", left)
			}
			if err := pw.CloseWithError(errors.New("killed")); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err == nil {
				t.Error("the cut write succeeded")
			}
		})
	}
}
