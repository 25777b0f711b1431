package local

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestPrepareDataDir: the data directory is private whatever state it is
// found in. One created by hand (mkdir data: 0755, or 0777 with a lax
// umask) was used as it was: with it writable by others, anyone could
// put events.log there as a symlink into a file everybody reads, and
// every event went there.
func TestPrepareDataDir(t *testing.T) {
	const nobody = 65534
	tests := []struct {
		name   string
		mode   fs.FileMode // 0: the directory is not there
		owner  int         // -1: this user
		want   fs.FileMode
		errHas string
		root   bool // needs root (a directory of another user)
	}{
		{name: "created", want: 0o700, owner: -1},
		{name: "private already", mode: 0o700, want: 0o700, owner: -1},
		{name: "made by hand", mode: 0o755, want: 0o700, owner: -1},
		{name: "others may write", mode: 0o777, want: 0o777, owner: -1, errHas: "others than its owner may write in it (mode -rwxrwxrwx)"},
		{name: "group may write", mode: 0o770, want: 0o770, owner: -1, errHas: "others than its owner may write in it"},
		{name: "sticky like /tmp", mode: 0o777 | fs.ModeSticky, want: 0o777, owner: -1, errHas: "others than its owner may write in it"},
		{name: "another user's, others may write", mode: 0o777, owner: nobody, root: true, want: 0o777,
			errHas: "others than its owner may write in it"},
		{name: "another user's, its owner's alone to write", mode: 0o755, owner: nobody, root: true, want: 0o755},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.root {
				testenv.RequireRoot(t, "to give the directory another owner")
			}
			dir := filepath.Join(t.TempDir(), "data")
			if tt.mode != 0 {
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(dir, tt.mode); err != nil {
					t.Fatal(err)
				}
				if tt.owner >= 0 {
					if err := os.Chown(dir, tt.owner, tt.owner); err != nil {
						t.Fatal(err)
					}
				}
			}
			err := PrepareDataDir(dir)
			switch {
			case tt.errHas == "" && err != nil:
				t.Fatalf("PrepareDataDir = %v", err)
			case tt.errHas != "" && (err == nil || !strings.Contains(err.Error(), tt.errHas)):
				t.Fatalf("PrepareDataDir = %v, want an error saying %q", err, tt.errHas)
			}
			st, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != tt.want {
				t.Errorf("mode %v, want %v", st.Mode().Perm(), tt.want)
			}
		})
	}
}

// TestStartOnADataDirOthersWrite: local mode refuses a data directory
// others may write in, where one could have put events.log as a symlink
// into a file everybody reads (every event was appended there), and
// opens one made by hand (mkdir: 0755) as one it created.
func TestStartOnADataDirOthersWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	public := filepath.Join(t.TempDir(), "public.log")
	if err := os.WriteFile(public, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(public, filepath.Join(dir, EventLogFile)); err != nil {
		t.Fatal(err)
	}
	if l, err := Start(context.Background(), testConfig(dir)); err == nil {
		stop(t, l)
		t.Fatal("Start on a data directory others may write in succeeded")
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, EventLogFile)); err != nil {
		t.Fatal(err)
	}
	stop(t, startTest(t, dir))
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("data directory after Start: %v, mode %v, want 0700", err, st.Mode().Perm())
	}
}

// TestPrepareDataDirNarrowsItsFiles: every file local mode writes in the
// data directory is its user's alone, also one an older build or a hand
// left readable by others: the databases were narrowed when opened, but
// events.log, the holder and the log-name key kept the mode they were
// found with (events.log 0644: every event, and with EVENT_PATIENT_DATA
// the patients, readable by whoever could reach it).
func TestPrepareDataDirNarrowsItsFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]fs.FileMode{
		EventLogFile: 0o644, DBFile: 0o644, DBFile + "-wal": 0o640, DBFile + "-shm": 0o644, localstore.QueuePath(DBFile): 0o604,
		HolderFile: 0o644, LockFile: 0o644, logname.KeyFile: 0o640, "private already": 0o600, "read-only": 0o444,
	}
	want := map[string]fs.FileMode{"read-only": 0o400, "objects": 0o750}
	for name, mode := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	// Objects are written 0600 in directories the data directory's mode
	// keeps from others: the directories are left as they are.
	if err := os.Mkdir(filepath.Join(dir, "objects"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := PrepareDataDir(dir); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		w, ok := want[e.Name()]
		if !ok {
			w = 0o600
		}
		if fi.Mode().Perm() != w {
			t.Errorf("%s: mode %v, want %v", e.Name(), fi.Mode().Perm(), w)
		}
	}
}

// TestDataDirsAStartCannotUse: a data directory the start cannot use is
// refused with what to do about it. A dangling symlink gave MkdirAll's
// "file exists"; a directory on a filesystem that does not keep Unix modes
// (WSL's /mnt/c, where a checkout's ./data lands) was refused with advice
// to chmod it, which cannot work there.
func TestDataDirsAStartCannotUse(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string)
		start   func(dir string) error // nil: PrepareDataDir
		errHas  []string
	}{
		{name: "dangling symlink", prepare: func(t *testing.T, dir string) {
			if err := os.Symlink(filepath.Join(filepath.Dir(dir), "gone"), dir); err != nil {
				t.Fatal(err)
			}
		}, errHas: []string{"is a symlink to", "gone, which is not there: create it, or remove the symlink"}},
		{name: "filesystem without Unix modes", prepare: func(t *testing.T, dir string) {
			wideModes(t)
		}, errHas: noUnixModes},
		// The directory an earlier start made there (this build's, or an
		// older one's that advised chmod) was refused with that advice,
		// by the first check a start makes (CheckDataDir) and by
		// PrepareDataDir alike: only a directory just created was known
		// for what it is.
		{name: "filesystem without Unix modes, the directory made by an earlier start", prepare: func(t *testing.T, dir string) {
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			wideModes(t)
		}, errHas: noUnixModes},
		{name: "filesystem without Unix modes, checked at the start", prepare: func(t *testing.T, dir string) {
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			wideModes(t)
		}, start: CheckDataDir, errHas: noUnixModes},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			tt.prepare(t, dir)
			start := PrepareDataDir
			if tt.start != nil {
				start = tt.start
			}
			err := start(dir)
			if err == nil {
				t.Fatal("the start succeeded")
			}
			for _, want := range tt.errHas {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("PrepareDataDir = %v, want it to say %q", err, want)
				}
			}
		})
	}
}

// noUnixModes is what the refusal of a data directory on a filesystem
// that does not keep Unix modes says.
var noUnixModes = []string{"made mode 0700 there, reads back mode -rwxrwxrwx", "does not keep Unix modes", "choose a data directory on a Linux filesystem"}

// wideModes makes every directory read as drvfs reports it until t ends.
func wideModes(t *testing.T) {
	statDataDir = func(name string) (fs.FileInfo, error) {
		st, err := os.Stat(name)
		if err != nil {
			return nil, err
		}
		return wideMode{st}, nil
	}
	t.Cleanup(func() { statDataDir = os.Stat })
}

// wideMode is a directory as drvfs reports it: everybody may write.
type wideMode struct{ fs.FileInfo }

func (w wideMode) Mode() fs.FileMode { return fs.ModeDir | 0o777 }
