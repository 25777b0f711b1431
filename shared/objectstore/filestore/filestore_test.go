package filestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
)

var at = time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC)

func object(sop string) objectstore.Object {
	return objectstore.Object{SOPClassUID: "1.2.840.10008.5.1.4.1.1.2", SOPInstanceUID: sop,
		StudyInstanceUID: "1.2.3", SeriesInstanceUID: "1.2.3.4", TransferSyntaxUID: "1.2.840.10008.1.2.1",
		CallingAE: "SCU", ReceivedAt: at}
}

func newStore(t testing.TB, opts ...Option) *Store {
	t.Helper()
	s, err := New(t.TempDir(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// writeModes are the store's two ways of writing an object; tests of the
// write path run under both.
var writeModes = []struct {
	name string
	opts []Option
}{
	{"default", nil},
	{"buffered", []Option{WithBufferedWrites()}},
	{"no-journal", []Option{WithoutJournal()}},
}

// sum is b's CRC-64/NVME as Stored.CRC64NVME holds it.
func sum(b []byte) string { _, b64 := objectstore.ContentChecksum(b); return b64 }

// conflictKey is where b goes when key holds other content.
func conflictKey(key string, b []byte) string {
	crc, _ := objectstore.ContentChecksum(b)
	return objectstore.ChecksumConflictKey(key, crc)
}

// files lists every regular file under root (relative, slash-separated),
// the temporary directory included, the journal's segments not.
func files(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == JournalDir {
			return fs.SkipDir
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func readKey(t testing.TB, s *Store, key string) []byte {
	t.Helper()
	f, err := s.Open(key)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPutSequence(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	a, b, c := []byte("object A"), []byte("object B, longer"), []byte("object C")
	key := "incoming/2026/03/08/1.2.3/1.2.3.4/1.2.3.4.5.dcm"
	steps := []struct {
		name string
		body []byte
		want objectstore.Stored
	}{
		{"first", a, objectstore.Stored{Key: key, Size: int64(len(a))}},
		{"same again is a duplicate", a, objectstore.Stored{Key: key, Size: int64(len(a)), Duplicate: true}},
		{"different content is a conflict", b, objectstore.Stored{Key: conflictKey(key, b), Size: int64(len(b)), CRC64NVME: sum(b), Conflict: true}},
		{"the conflicting one again", b, objectstore.Stored{Key: conflictKey(key, b), Size: int64(len(b)), CRC64NVME: sum(b), Conflict: true, Duplicate: true}},
		{"same size, other content", c, objectstore.Stored{Key: conflictKey(key, c), Size: int64(len(c)), CRC64NVME: sum(c), Conflict: true}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			got, err := s.Put(ctx, object("1.2.3.4.5"), bytes.NewReader(st.body))
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			if d := cmp.Diff(st.want, got); d != "" {
				t.Fatalf("Stored (-want +got):\n%s", d)
			}
			if body := readKey(t, s, got.Key); !bytes.Equal(body, st.body) {
				t.Errorf("stored %q, want %q", body, st.body)
			}
		})
	}
	if body := readKey(t, s, key); !bytes.Equal(body, a) {
		t.Errorf("original overwritten: %q", body)
	}
	want := []string{key, conflictKey(key, b), conflictKey(key, c)}
	sort.Strings(want)
	if d := cmp.Diff(want, files(t, s.Root())); d != "" {
		t.Errorf("files (-want +got):\n%s", d)
	}
}

// TestPutConcurrent races many Puts of one key: one wins, the same bytes
// are duplicates, other bytes are conflicts, nothing is lost or torn.
func TestPutConcurrent(t *testing.T) {
	for _, variants := range []int{1, 4} {
		t.Run(fmt.Sprintf("%d contents", variants), func(t *testing.T) {
			s := newStore(t)
			const n = 24
			bodies := make([][]byte, variants)
			for i := range bodies {
				bodies[i] = bytes.Repeat([]byte{byte('a' + i)}, 100<<10+i)
			}
			results := make([]objectstore.Stored, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					results[i], errs[i] = s.Put(context.Background(), object("9.8.7"), bytes.NewReader(bodies[i%variants]))
				})
			}
			wg.Wait()
			plain, firstPerKey := 0, map[string]int{}
			for i, r := range results {
				if errs[i] != nil {
					t.Fatalf("Put %d: %v", i, errs[i])
				}
				if !r.Conflict && !r.Duplicate {
					plain++
				}
				if !r.Duplicate {
					firstPerKey[r.Key]++
				}
				if got := readKey(t, s, r.Key); !bytes.Equal(got, bodies[i%variants]) {
					t.Errorf("Put %d: key %s holds other bytes", i, r.Key)
				}
			}
			if plain != 1 {
				t.Errorf("%d Puts stored under the plain key, want 1", plain)
			}
			for k, c := range firstPerKey {
				if c != 1 {
					t.Errorf("%s stored %d times", k, c)
				}
			}
			if got := len(files(t, s.Root())); got != variants {
				t.Errorf("%d files, want %d", got, variants)
			}
		})
	}
}

type errAfter struct {
	r   io.Reader
	err error
}

func (e *errAfter) Read(b []byte) (int, error) {
	n, err := e.r.Read(b)
	if err == io.EOF {
		return n, e.err
	}
	return n, err
}

// cancelAfter cancels ctx once n bytes were read.
type cancelAfter struct {
	r      io.Reader
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n -= n
	if c.n <= 0 {
		c.cancel()
	}
	return n, err
}

// TestPutFailureLeavesNothing: an aborted transfer, a cancelled context or
// an unusable key store nothing and leave no temporary file.
func TestPutFailureLeavesNothing(t *testing.T) {
	aborted := errors.New("association aborted")
	body := bytes.Repeat([]byte("x"), 1<<20)
	tests := []struct {
		name    string
		obj     objectstore.Object
		ctx     func() context.Context
		reader  func(cancel context.CancelFunc) io.Reader
		wantErr error
	}{
		{"read error midway", object("1.2.3"), context.Background,
			func(context.CancelFunc) io.Reader { return &errAfter{bytes.NewReader(body[:700<<10]), aborted} }, aborted},
		{"unexpected EOF", object("1.2.3"), context.Background,
			func(context.CancelFunc) io.Reader { return &errAfter{bytes.NewReader(body[:10]), io.ErrUnexpectedEOF} }, io.ErrUnexpectedEOF},
		{"cancelled midway", object("1.2.3"), nil,
			func(cancel context.CancelFunc) io.Reader {
				return &cancelAfter{r: bytes.NewReader(body), n: 300 << 10, cancel: cancel}
			}, context.Canceled},
		{"cancelled before", object("1.2.3"), func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, func(context.CancelFunc) io.Reader { return bytes.NewReader(body) }, context.Canceled},
		{"path traversal in SOP UID", object("../../etc/passwd"), context.Background,
			func(context.CancelFunc) io.Reader { return bytes.NewReader(body) }, objectstore.ErrUnsafeUID},
		{"empty SOP UID", object(""), context.Background,
			func(context.CancelFunc) io.Reader { return bytes.NewReader(body) }, objectstore.ErrUnsafeUID},
	}
	for _, mode := range writeModes {
		for _, tt := range tests {
			t.Run(mode.name+"/"+tt.name, func(t *testing.T) {
				testPutFailure(t, newStore(t, mode.opts...), tt.obj, tt.ctx, tt.reader, tt.wantErr)
			})
		}
	}
}

func testPutFailure(t *testing.T, s *Store, obj objectstore.Object, newCtx func() context.Context,
	reader func(context.CancelFunc) io.Reader, wantErr error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if newCtx != nil {
		ctx = newCtx()
	}
	_, err := s.Put(ctx, obj, reader(cancel))
	if !errors.Is(err, wantErr) {
		t.Fatalf("Put error = %v, want %v", err, wantErr)
	}
	if errors.Is(err, objectstore.ErrUnavailable) {
		t.Errorf("error %v marked unavailable; the store is fine", err)
	}
	if f := files(t, s.Root()); len(f) != 0 {
		t.Errorf("files left behind: %v", f)
	}
}

func TestPutUnavailable(t *testing.T) {
	for _, mode := range writeModes {
		t.Run(mode.name, func(t *testing.T) { testPutUnavailable(t, newStore(t, mode.opts...)) })
	}
}

func testPutUnavailable(t *testing.T, s *Store) {
	// The temporary directory replaced by a file: every write fails.
	if err := os.RemoveAll(filepath.Join(s.Root(), TempDir)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Root(), TempDir), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := s.Put(context.Background(), object("1.2.3"), strings.NewReader("x"))
	if !errors.Is(err, objectstore.ErrUnavailable) {
		t.Errorf("Put error = %v, want ErrUnavailable", err)
	}
	if err := s.probe(); !errors.Is(err, objectstore.ErrUnavailable) {
		t.Errorf("Ready = %v, want ErrUnavailable", err)
	}
}

func TestReady(t *testing.T) {
	s := newStore(t)
	if err := s.Ready(context.Background()); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if f := files(t, s.Root()); len(f) != 0 {
		t.Errorf("Ready left files: %v", f)
	}
	// The result is reused for a second, then probed again.
	os.RemoveAll(filepath.Join(s.Root(), TempDir))
	if err := os.WriteFile(filepath.Join(s.Root(), TempDir), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(context.Background()); err != nil {
		t.Errorf("cached Ready = %v, want nil", err)
	}
	s.readyMu.Lock()
	s.readyAt = s.readyAt.Add(-readyTTL)
	s.readyMu.Unlock()
	if err := s.Ready(context.Background()); !errors.Is(err, objectstore.ErrUnavailable) {
		t.Errorf("Ready with the temporary directory replaced by a file = %v, want ErrUnavailable", err)
	}
}

// TestTempDirRecreated: an operator removing the temporary directory does
// not break the store.
func TestTempDirRecreated(t *testing.T) {
	s := newStore(t)
	if err := os.RemoveAll(filepath.Join(s.Root(), TempDir)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(context.Background(), object("1.2.3"), strings.NewReader("x")); err != nil {
		t.Fatalf("Put: %v", err)
	}
	full, err := New(t.TempDir(), WithMinFreeBytes(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	if err := full.Ready(context.Background()); !errors.Is(err, objectstore.ErrUnavailable) {
		t.Errorf("Ready with too little space = %v, want ErrUnavailable", err)
	}
}

// TestReserve: below the reserve (WithMinFreeBytes) Put refuses objects
// and Ready fails, both as ErrUnavailable and ErrReserve, while records
// still go; once space returns objects go again.
func TestReserve(t *testing.T) {
	for _, tt := range []struct {
		name     string
		minFree  uint64
		free     uint64
		measured bool // false: the system does not tell the free space
		refused  bool
	}{
		{"no reserve", 0, 0, true, false},
		{"above the reserve", 1 << 20, 2 << 20, true, false},
		{"at the reserve", 1 << 20, 1 << 20, true, false},
		{"below the reserve", 1 << 20, 1<<20 - 1, true, true},
		{"free space not measured", 1 << 20, 0, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, mode := range writeModes {
				var mu sync.Mutex
				free := tt.free
				s := newStore(t, append([]Option{WithMinFreeBytes(tt.minFree)}, mode.opts...)...)
				s.freeBytes = func(string) (uint64, error) {
					mu.Lock()
					defer mu.Unlock()
					if !tt.measured {
						return 0, errors.ErrUnsupported
					}
					return free, nil
				}
				ctx := context.Background()
				_, err := s.Put(ctx, object("1.2.3.4.1"), strings.NewReader("x"))
				if got := errors.Is(err, ErrReserve) && errors.Is(err, objectstore.ErrUnavailable); got != tt.refused {
					t.Errorf("%s: Put = %v, refused %v, want %v", mode.name, err, got, tt.refused)
				}
				if !tt.refused && err != nil {
					t.Fatalf("%s: Put: %v", mode.name, err)
				}
				if err := s.Ready(ctx); errors.Is(err, ErrReserve) != tt.refused {
					t.Errorf("%s: Ready = %v, want refused %v", mode.name, err, tt.refused)
				}
				if err := s.PutRecord(ctx, "audit/2026/03/08/r-"+mode.name+".json", []byte("{}")); err != nil {
					t.Errorf("%s: PutRecord below the reserve: %v", mode.name, err)
				}
				if !tt.refused {
					continue
				}
				// Space returns: objects go in again.
				mu.Lock()
				free = tt.minFree
				mu.Unlock()
				if _, err := s.Put(ctx, object("1.2.3.4.2"), strings.NewReader("x")); err != nil {
					t.Errorf("%s: Put once space returned: %v", mode.name, err)
				}
			}
		})
	}
}

func TestNewRemovesLeftovers(t *testing.T) {
	root := t.TempDir()
	s, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(context.Background(), object("1.2.3"), strings.NewReader("kept")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"put-123", "rec-9"} {
		if err := os.WriteFile(filepath.Join(root, TempDir, name), []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := New(root); err != nil {
		t.Fatal(err)
	}
	want := []string{"incoming/2026/03/08/1.2.3/1.2.3.4/1.2.3.dcm"}
	if d := cmp.Diff(want, files(t, root)); d != "" {
		t.Errorf("files after New (-want +got):\n%s", d)
	}
}

func TestPutRecord(t *testing.T) {
	tests := []struct {
		key     string
		wantErr error
	}{
		{"audit/2026/03/08/assoc-1.json", nil},
		{"audit/x", nil},
		{"incoming/x.json", ErrInvalidKey},
		{"audit/../incoming/x.dcm", ErrInvalidKey},
		{"audit/./x", ErrInvalidKey},
		{"audit//x", ErrInvalidKey},
		{"audit/.tmp/x", ErrInvalidKey},
		{"audit/x/", ErrInvalidKey},
		{"audit/a\\..\\..\\b", ErrInvalidKey},
		{"audit/a\x00b", ErrInvalidKey},
		{"/audit/x", ErrInvalidKey},
		{"audit/", ErrInvalidKey},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			s := newStore(t)
			body := []byte(`{"event":"released"}`)
			err := s.PutRecord(context.Background(), tt.key, body)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("PutRecord error = %v, want %v", err, tt.wantErr)
			}
			got := files(t, s.Root())
			if tt.wantErr != nil {
				if len(got) != 0 {
					t.Errorf("files written: %v", got)
				}
				return
			}
			if d := cmp.Diff([]string{tt.key}, got); d != "" {
				t.Errorf("files (-want +got):\n%s", d)
			}
			if b := readKey(t, s, tt.key); !bytes.Equal(b, body) {
				t.Errorf("record = %q", b)
			}
			// A retry with the same bytes succeeds; other bytes never
			// replace the record, and leave no temporary file.
			if err := s.PutRecord(context.Background(), tt.key, body); err != nil {
				t.Errorf("same record again: %v", err)
			}
			if err := s.PutRecord(context.Background(), tt.key, []byte("2")); err == nil {
				t.Error("a different record replaced an existing one")
			}
			if b := readKey(t, s, tt.key); !bytes.Equal(b, body) {
				t.Errorf("record after a refused rewrite = %q", b)
			}
			if d := cmp.Diff([]string{tt.key}, files(t, s.Root())); d != "" {
				t.Errorf("files after the rewrites (-want +got):\n%s", d)
			}
		})
	}
}

func TestOpenStatUnsafe(t *testing.T) {
	s := newStore(t)
	for _, key := range []string{"../x", ".tmp/put-1", "a/../../b", ""} {
		if _, err := s.Open(key); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Open(%q) = %v, want ErrInvalidKey", key, err)
		}
		if _, err := s.Stat(key); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Stat(%q) = %v, want ErrInvalidKey", key, err)
		}
	}
	if _, err := s.Open("incoming/none.dcm"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open(missing) = %v, want fs.ErrNotExist", err)
	}
	if _, err := s.Stat("incoming"); !errors.Is(err, fs.ErrNotExist) && err != nil {
		t.Errorf("Stat(dir) = %v", err)
	}
}

func TestWalk(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	put := func(o objectstore.Object, body string) string {
		st, err := s.Put(ctx, o, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		return st.Key
	}
	o1, o2, o3 := object("1.1"), object("1.2"), object("1.3")
	o3.ReceivedAt = at.AddDate(0, 1, 0)
	k1, k2, k3 := put(o1, "a"), put(o2, "bb"), put(o3, "ccc")
	kc := put(o1, "other") // a conflict
	if err := s.PutRecord(ctx, "audit/r.json", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	// Other writers' temporary files and hidden entries are not listed.
	dir := filepath.Dir(filepath.Join(s.Root(), filepath.FromSlash(k1)))
	os.WriteFile(filepath.Join(dir, ".x.dcm.abc.tmp"), nil, 0o600)
	os.WriteFile(filepath.Join(dir, "y.dcm.tmp"), nil, 0o600)
	os.WriteFile(filepath.Join(s.Root(), TempDir, "put-1"), nil, 0o600)

	all := []string{k1, kc, k2, k3}
	sort.Strings(all)
	tests := []struct {
		prefix string
		want   []string
	}{
		{"", append([]string{"audit/r.json"}, all...)},
		{"incoming/", all},
		{"incoming/2026/03/", []string{kc, k1, k2}},
		{"incoming/2026/0", all},
		{"incoming/2026/04", []string{k3}},
		{strings.TrimSuffix(k1, ".dcm"), []string{kc, k1}},
		{"audit", []string{"audit/r.json"}},
		{"quarantine/", nil},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			var got []string
			err := s.Walk(ctx, tt.prefix, func(key string, info fs.FileInfo) error {
				got = append(got, key)
				if st, err := s.Stat(key); err != nil || st.Size() != info.Size() {
					t.Errorf("Stat(%s) = %v, %v", key, st, err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("Walk (-want +got):\n%s", d)
			}
		})
	}
	stop := errors.New("stop")
	if err := s.Walk(ctx, "", func(string, fs.FileInfo) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("Walk error = %v, want stop", err)
	}
	if err := s.Walk(ctx, "../", func(string, fs.FileInfo) error { return nil }); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("Walk(../) = %v, want ErrInvalidKey", err)
	}
}

// BenchmarkPut stores 512 KiB objects with fsync, each under a new key.
func BenchmarkPut(b *testing.B) {
	s := newStore(b)
	body := bytes.Repeat([]byte("0123456789abcdef"), 512<<10/16)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	i := 0
	r := bytes.NewReader(body)
	for b.Loop() {
		i++
		r.Reset(body)
		if _, err := s.Put(context.Background(), object(fmt.Sprintf("1.2.%d", i)), r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPutParallel stores 512 KiB objects from 8 goroutines, as 8
// associations would: concurrent fsyncs share journal commits.
func BenchmarkPutParallel(b *testing.B) {
	s := newStore(b)
	body := bytes.Repeat([]byte("0123456789abcdef"), 512<<10/16)
	b.SetBytes(int64(len(body)))
	b.SetParallelism(4) // 4 × GOMAXPROCS(2) goroutines
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		r := bytes.NewReader(body)
		for pb.Next() {
			r.Reset(body)
			if _, err := s.Put(context.Background(), object(fmt.Sprintf("1.2.%d", next.Add(1))), r); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestPlacingSyncsBothDirectories: by the file recipe, after moving a
// temporary file into place, Put and PutRecord fsync the destination directory and the
// temporary one (see syncPlaced), before they return.
func TestPlacingSyncsBothDirectories(t *testing.T) {
	s := newStore(t, WithoutJournal())
	var synced []string
	orig := syncDir
	syncDir = func(dir string) error { synced = append(synced, dir); return orig(dir) }
	defer func() { syncDir = orig }()

	st, err := s.Put(context.Background(), object("1.2.3"), strings.NewReader("object"))
	if err != nil {
		t.Fatal(err)
	}
	final, err := s.Path(st.Key)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(s.Root(), TempDir)
	wantTail := []string{filepath.Dir(final), tmp}
	if len(synced) < 2 || !slices.Equal(synced[len(synced)-2:], wantTail) {
		t.Errorf("Put synced %v, want it to end with %v", synced, wantTail)
	}

	synced = nil
	key := objectstore.AuditPrefix + "2026/11/27/a.json"
	if err := s.PutRecord(context.Background(), key, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	rec, _ := s.Path(key)
	wantTail = []string{filepath.Dir(rec), tmp}
	if len(synced) < 2 || !slices.Equal(synced[len(synced)-2:], wantTail) {
		t.Errorf("PutRecord synced %v, want it to end with %v", synced, wantTail)
	}
}

// TestFailedDirectorySyncIsNoDuplicate: when the fsync of a placed file's
// directory fails once (then succeeds), Put and PutRecord fail, and the
// resend is no duplicate of the file left in place, acknowledged with no
// fsync of its own: it is written again and its directories fsynced.
// The resend was answered as a duplicate, without a sync.
func TestFailedDirectorySyncIsNoDuplicate(t *testing.T) {
	eio := errors.New("EIO")
	for _, tt := range []struct {
		name string
		put  func(s *Store) (key string, dup bool, err error)
	}{
		{"Put", func(s *Store) (string, bool, error) {
			st, err := s.Put(context.Background(), object("1.2.3"), strings.NewReader("object"))
			return st.Key, st.Duplicate, err
		}},
		{"PutRecord", func(s *Store) (string, bool, error) {
			key := objectstore.AuditPrefix + "2026/11/27/a.json"
			return key, false, s.PutRecord(context.Background(), key, []byte("{}"))
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t, WithoutJournal())
			orig := syncDir
			defer func() { syncDir = orig }()
			fails := 1
			syncs := 0
			// The temporary directory's fsync, the last step of placing.
			tmp := filepath.Join(s.Root(), TempDir)
			syncDir = func(dir string) error {
				syncs++
				if fails > 0 && dir == tmp {
					fails--
					return eio
				}
				return orig(dir)
			}
			if _, _, err := tt.put(s); !errors.Is(err, eio) || !errors.Is(err, objectstore.ErrUnavailable) {
				t.Fatalf("first %s = %v, want the failed sync, unavailable", tt.name, err)
			}
			syncs = 0
			key, dup, err := tt.put(s)
			if err != nil {
				t.Fatalf("resend: %v", err)
			}
			if dup || syncs < 2 {
				t.Errorf("resend: duplicate %v after %d directory fsyncs, want it written again and both directories fsynced", dup, syncs)
			}
			if rc, err := s.Open(key); err != nil {
				t.Errorf("resent object: %v", err)
			} else if err := rc.Close(); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestConcurrentPutRecordWaitsForTheSync: a PutRecord of the same bytes
// while another's directory fsync runs is no acknowledgement of that
// record until the fsync succeeded: when it fails, the record placed is
// removed (unplace), so the concurrent PutRecord either fails or writes
// it anew. PutRecord did not hold its key as Put does, and answered the
// concurrent one success for a record then removed.
func TestConcurrentPutRecordWaitsForTheSync(t *testing.T) {
	s := newStore(t, WithoutJournal())
	key := objectstore.AuditPrefix + "2026/11/27/a.json"
	body := []byte(`{"a":1}`)
	// Made before the hook: the concurrent PutRecord creates no directory.
	if err := s.mkdirAll(filepath.Dir(filepath.Join(s.Root(), filepath.FromSlash(key)))); err != nil {
		t.Fatal(err)
	}
	orig := syncDir
	defer func() { syncDir = orig }()
	eio := errors.New("EIO")
	tmp := filepath.Join(s.Root(), TempDir)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	syncDir = func(dir string) error {
		first := false
		if dir == tmp {
			once.Do(func() { first = true })
		}
		if first {
			close(entered)
			<-release
			return eio
		}
		return orig(dir)
	}
	firstErr := make(chan error, 1)
	go func() { firstErr <- s.PutRecord(context.Background(), key, body) }()
	<-entered // the first record is placed, its directories' fsync under way
	secondErr := make(chan error, 1)
	go func() { secondErr <- s.PutRecord(context.Background(), key, body) }()
	// Give the second PutRecord every chance to answer before the fsync
	// fails (it answered at once, success, before the fix); it may also
	// wait for the first, which is what the fix does.
	var second error
	answered := false
	select {
	case second = <-secondErr:
		answered = true
	case <-time.After(2 * time.Second):
	}
	close(release)
	if err := <-firstErr; !errors.Is(err, eio) {
		t.Fatalf("first PutRecord = %v, want the failed fsync", err)
	}
	if !answered {
		second = <-secondErr
	}
	if second != nil {
		return // not acknowledged: the sender retries
	}
	got, err := os.ReadFile(filepath.Join(s.Root(), filepath.FromSlash(key)))
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("the concurrent PutRecord succeeded, but the record reads %q, %v", got, err)
	}
}

// TestFailedParentSyncRemovesTheDirectory: a directory whose parent's
// fsync failed is removed, so that the resend creates it again and
// fsyncs its parent. Left in place, it was taken as made by the resend,
// whose object was acknowledged in a directory whose name might not be on
// the disk.
func TestFailedParentSyncRemovesTheDirectory(t *testing.T) {
	s := newStore(t, WithoutJournal())
	orig := syncDir
	defer func() { syncDir = orig }()
	eio := errors.New("EIO")
	var failed string
	var synced []string
	syncDir = func(dir string) error {
		if failed == "" {
			failed = dir
			return eio
		}
		synced = append(synced, dir)
		return orig(dir)
	}
	if _, err := s.Put(context.Background(), object("1.2.3"), strings.NewReader("object")); !errors.Is(err, eio) {
		t.Fatalf("Put = %v, want the failed fsync", err)
	}
	if _, err := s.Put(context.Background(), object("1.2.3"), strings.NewReader("object")); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(synced, failed) {
		t.Errorf("the resend fsynced %v, not %s, whose fsync failed", synced, failed)
	}
}

// TestSameFiles: duplicate detection compares bytes, across the chunks it
// reads and at the very last byte.
func TestSameFiles(t *testing.T) {
	dir := t.TempDir()
	body := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i * 7)
		}
		return b
	}
	flip := func(b []byte, at int) []byte {
		c := bytes.Clone(b)
		c[at] ^= 1
		return c
	}
	big := body(2*compareChunk + 100)
	tests := []struct {
		name   string
		stored []byte
		other  []byte
		want   bool
	}{
		{"empty", nil, nil, true},
		{"equal, one chunk", body(100), body(100), true},
		{"equal, exactly one chunk", body(compareChunk), body(compareChunk), true},
		{"equal, several chunks", big, big, true},
		{"first byte differs", big, flip(big, 0), false},
		{"last byte of a chunk differs", big, flip(big, compareChunk-1), false},
		{"last byte differs", big, flip(big, len(big)-1), false},
		{"stored is longer", body(compareChunk + 1), body(compareChunk), false},
		{"stored is shorter", body(compareChunk), body(compareChunk + 1), false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stored, other := filepath.Join(dir, fmt.Sprint("s", i)), filepath.Join(dir, fmt.Sprint("o", i))
			if err := os.WriteFile(stored, tt.stored, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(other, tt.other, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := sameFiles(stored, other, int64(len(tt.other)))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("sameFiles = %v, want %v", got, tt.want)
			}
		})
	}
	if _, err := sameFiles(filepath.Join(dir, "missing"), filepath.Join(dir, "s0"), 0); err == nil {
		t.Error("sameFiles of a missing file: no error")
	}
}

// TestPutWithHook: the hook runs before every key the object tries to
// take, sees nothing there yet for a new object, and a failing hook leaves
// nothing stored.
func TestPutWithHook(t *testing.T) {
	first, other := []byte("first content"), []byte("other content")
	boom := errors.New("boom")
	tests := []struct {
		name      string
		existing  []byte // already stored under the object's key
		body      []byte
		failOn    int // fail the hook's n-th call (1-based); 0 never
		wantCalls []bool
		wantErr   error
		wantFiles int
	}{
		{name: "new object", body: first, wantCalls: []bool{false}, wantFiles: 1},
		{name: "duplicate", existing: first, body: first, wantCalls: []bool{false}, wantFiles: 1},
		{name: "conflict", existing: first, body: other, wantCalls: []bool{false, true}, wantFiles: 2},
		{name: "hook fails", body: first, failOn: 1, wantCalls: []bool{false}, wantErr: boom, wantFiles: 0},
		{name: "hook fails on the conflict key", existing: first, body: other, failOn: 2, wantCalls: []bool{false, true}, wantErr: boom, wantFiles: 1},
	}
	for _, mode := range writeModes {
		for _, tt := range tests {
			t.Run(mode.name+"/"+tt.name, func(t *testing.T) {
				s := newStore(t, mode.opts...)
				ctx := context.Background()
				obj := object("1.2.3.4.5")
				if tt.existing != nil {
					if _, err := s.Put(ctx, obj, bytes.NewReader(tt.existing)); err != nil {
						t.Fatal(err)
					}
				}
				var calls []bool
				st, err := s.PutWith(ctx, obj, bytes.NewReader(tt.body), Hooks{Checksum: true, Before: func(_ context.Context, st objectstore.Stored, journaled bool) ([]byte, error) {
					calls = append(calls, st.Conflict)
					if want := mode.name != "no-journal"; journaled != want {
						t.Errorf("hook says journaled %v, want %v", journaled, want)
					}
					p, _ := s.Path(st.Key)
					if _, err := os.Stat(p); tt.existing == nil && err == nil {
						t.Errorf("hook for %s called after the object was placed", st.Key)
					}
					if len(calls) == tt.failOn {
						return nil, boom
					}
					return nil, nil
				}})
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("PutWith = %+v, %v; want %v", st, err, tt.wantErr)
				}
				if err == nil && st.CRC64NVME != sum(tt.body) {
					t.Errorf("Stored CRC-64/NVME %q, want the body's %q", st.CRC64NVME, sum(tt.body))
				}
				if d := cmp.Diff(tt.wantCalls, calls); d != "" {
					t.Errorf("hook calls, conflict flag each (-want +got):\n%s", d)
				}
				if got := files(t, s.Root()); len(got) != tt.wantFiles {
					t.Errorf("files after PutWith: %v, want %d", got, tt.wantFiles)
				}
			})
		}
	}
}

// TestHeldRecordsHandedBack: a journaled object whose record the caller
// holds comes back, with its note, from the next New, after a clean close
// as after a crash, until it is released. A released one comes back only
// after a crash before its checkpoint, as it is replayed then.
func TestHeldRecordsHandedBack(t *testing.T) {
	type handedBack struct {
		key, note string
	}
	tests := []struct {
		name    string
		release bool // the caller releases the record before the store goes
		crash   bool // the store is left without Close
		want    []string
	}{
		{name: "held, closed", want: []string{"note-1"}},
		{name: "held, crashed", crash: true, want: []string{"note-1"}},
		{name: "released, closed", release: true},
		{name: "released, crashed", release: true, crash: true, want: []string{"note-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := New(dir)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			body := []byte("held object")
			var releases []func()
			var held []byte
			st, err := s.PutWith(ctx, object("1.2.3.4.9"), bytes.NewReader(body), Hooks{
				Before: func(context.Context, objectstore.Stored, bool) ([]byte, error) { return []byte("note-1"), nil },
				Hold: func(_ string, b []byte, release func()) {
					held = bytes.Clone(b)
					releases = append(releases, release)
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(held, body) {
				t.Errorf("Hold saw %q, want the object's bytes %q", held, body)
			}
			if len(releases) != 1 {
				t.Fatalf("Hold called %d times, want 1", len(releases))
			}
			if tt.release {
				releases[0]()
				releases[0]() // a second call does nothing
			}
			if !tt.crash {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
			var got []handedBack
			var again []func()
			s2, err := New(dir, WithReplayHeld(func(key string, note []byte, release func()) {
				got = append(got, handedBack{key, string(note)})
				again = append(again, release)
			}))
			if err != nil {
				t.Fatal(err)
			}
			var notes []string
			for _, h := range got {
				if h.key != st.Key {
					t.Errorf("handed back key %q, want %q", h.key, st.Key)
				}
				notes = append(notes, h.note)
			}
			if d := cmp.Diff(tt.want, notes); d != "" {
				t.Errorf("notes handed back (-want +got):\n%s", d)
			}
			p, _ := s2.Path(st.Key)
			if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, body) {
				t.Errorf("object after the restart: %q, %v", b, err)
			}
			for _, r := range again {
				r()
			}
			if err := s2.Close(); err != nil {
				t.Fatal(err)
			}
			s3, err := New(dir, WithReplayHeld(func(string, []byte, func()) { t.Error("a released record was handed back") }))
			if err != nil {
				t.Fatal(err)
			}
			if err := s3.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestUnplaceLogsNoUID: when the file a failed directory fsync leaves
// cannot be removed, the line says so naming the object by its log name:
// the removal's error quotes the path, which holds the key's UIDs.
func TestUnplaceLogsNoUID(t *testing.T) {
	var logged bytes.Buffer
	s := newStore(t, WithoutJournal(), WithLogger(slog.New(slog.NewJSONHandler(&logged, nil))))
	obj := object("1.2.826.0.1.3680043.2.1125.99")
	key, err := objectstore.Key(obj)
	if err != nil {
		t.Fatal(err)
	}
	// A directory that is not empty where the file would be: the removal fails.
	final := filepath.Join(s.Root(), filepath.FromSlash(key))
	if err := os.MkdirAll(filepath.Join(final, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	s.unplace(key, final)
	out := logged.String()
	if !strings.Contains(out, "could not be removed") {
		t.Fatalf("no line for the failed removal; log:\n%s", out)
	}
	for _, uid := range []string{obj.SOPInstanceUID, obj.StudyInstanceUID + "/", obj.SeriesInstanceUID} {
		if strings.Contains(out, uid) {
			t.Errorf("the line quotes %q; log:\n%s", uid, out)
		}
	}
}

// TestConcurrentPutWaitsForItsDirectory: a Put into a directory another
// Put is creating waits for that creation's fsync of the parent, and
// fails with it. It took the directory as made as soon as it existed, so
// its object was placed and acknowledged while the parent's fsync still
// ran, and stayed so when that fsync failed (the directory, no longer
// empty, could not be removed).
func TestConcurrentPutWaitsForItsDirectory(t *testing.T) {
	s := newStore(t, WithoutJournal())
	orig := syncDir
	defer func() { syncDir = orig }()
	eio := errors.New("EIO")
	blocked, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	failing, healed := "", false
	syncDir = func(dir string) error {
		mu.Lock()
		first := failing == ""
		if first {
			failing = dir
		}
		fail := dir == failing && !healed
		mu.Unlock()
		if first {
			close(blocked)
			<-release
		}
		if fail {
			return eio
		}
		return orig(dir)
	}
	ctx := context.Background()
	firstErr := make(chan error, 1)
	go func() {
		_, err := s.Put(ctx, object("1.2.3.4.1"), strings.NewReader("first"))
		firstErr <- err
	}()
	<-blocked
	secondErr := make(chan error, 1)
	go func() {
		_, err := s.Put(ctx, object("1.2.3.4.2"), strings.NewReader("second"))
		secondErr <- err
	}()
	var second error
	select {
	case second = <-secondErr:
		// It did not wait for the parent's fsync.
		close(release)
	case <-time.After(200 * time.Millisecond): // let it reach the directory
		close(release)
		second = <-secondErr
	}
	if err := <-firstErr; !errors.Is(err, eio) {
		t.Fatalf("first Put = %v, want the failed fsync", err)
	}
	if !errors.Is(second, eio) {
		t.Fatalf("second Put into the directory whose parent's fsync failed = %v, want that failure", second)
	}
	mu.Lock()
	healed = true
	mu.Unlock()
	for _, sop := range []string{"1.2.3.4.1", "1.2.3.4.2"} {
		if _, err := s.Put(ctx, object(sop), strings.NewReader("resent "+sop)); err != nil {
			t.Fatalf("resend %s: %v", sop, err)
		}
	}
}

// TestFileCRC64NVME: the checksum of a file as S3 reports it, and none once
// the reader's context is done (a portal request whose client went away
// stops reading).
func TestFileCRC64NVME(t *testing.T) {
	body := bytes.Repeat([]byte("dicom "), 100_000)
	_, want := objectstore.ContentChecksum(body)
	path := filepath.Join(t.TempDir(), "object.dcm")
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		want    string
		wantErr error
	}{
		{"live context", context.Background(), want, nil},
		{"context done", done, "", context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FileCRC64NVME(tt.ctx, path)
			if got != tt.want || !errors.Is(err, tt.wantErr) {
				t.Errorf("FileCRC64NVME = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
