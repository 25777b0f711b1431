package local

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gofrs/flock"

	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
)

// LockFile is the file in the data directory that the process using it
// holds an advisory lock on: two processes on one data directory would
// both process the hand-off queue and write every event twice. HolderFile
// beside it names the holder (pid and start time) for the error the
// second one reports; it is a file of its own because the lock, on some
// systems, keeps other handles from writing the locked one.
const (
	LockFile   = "scp-task.lock"
	HolderFile = "scp-task.holder"
)

// ErrDataDirInUse is returned when another process holds the data
// directory's lock.
var ErrDataDirInUse = errors.New("data directory in use")

// dataDirLock is a held lock on a data directory.
type dataDirLock struct {
	lock *flock.Flock
	dir  string
}

// CheckDataDir reports ErrDataDirInUse, naming the holder, when another
// process holds dir's lock. It creates nothing (but the empty directory a
// refusal makes and removes to tell the filesystem: keepsModes): scp-task
// calls it before anything else touches the data directory, so it refuses
// first one that others may write in (RefuseOthersWrite): the lock found
// there, and its holder, could be anything (a FIFO waits for ever to be
// opened).
func CheckDataDir(dir string) error {
	if err := RefuseOthersWrite(dir); err != nil {
		return err
	}
	path := filepath.Join(dir, LockFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil // never locked: nobody holds it
	}
	l := flock.New(path)
	ok, err := l.TryLock()
	if err != nil {
		return fmt.Errorf("local: lock %s: %w", path, err)
	}
	if !ok {
		return inUse(dir)
	}
	if err := l.Close(); err != nil {
		return fmt.Errorf("local: unlock %s: %w", path, err)
	}
	return nil
}

// lockDataDir takes dir's lock (dir exists) and records this process as
// its holder.
func lockDataDir(dir string, started time.Time) (*dataDirLock, error) {
	path := filepath.Join(dir, LockFile)
	l := flock.New(path, flock.SetPermissions(0o600))
	ok, err := l.TryLock()
	if err != nil {
		return nil, fmt.Errorf("local: lock %s: %w", path, err)
	}
	if !ok {
		return nil, inUse(dir)
	}
	holder := fmt.Sprintf("pid %d\nstarted %s\n", os.Getpid(), started.UTC().Format(time.RFC3339))
	if err := os.WriteFile(filepath.Join(dir, HolderFile), []byte(holder), 0o600); err != nil {
		return nil, errors.Join(fmt.Errorf("local: record the lock's holder: %w", err), l.Close())
	}
	return &dataDirLock{lock: l, dir: dir}, nil
}

// release removes the holder record and lets the lock go.
func (d *dataDirLock) release() error {
	err := os.Remove(filepath.Join(d.dir, HolderFile))
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	return errors.Join(err, d.lock.Close())
}

// releaseAfter lets the lock go once db (nil: none opened) is closed,
// unless the database keeps connections open until the process exits: a
// database whose sync failed is not closed (localstore.DB.Close), nor is
// one whose Open failed with a failed fsync at its checkpoint (openErr,
// localstore.ErrSyncFailed: Open closes it as Close does), and another
// scp-task would open it beside them. The exit lets the lock go then.
func (d *dataDirLock) releaseAfter(db *localstore.DB, openErr error) error {
	if db != nil && db.SyncFailed() != nil || errors.Is(openErr, localstore.ErrSyncFailed) {
		return nil
	}
	return d.release()
}

// inUse builds the error naming dir's holder, as far as its record says.
func inUse(dir string) error {
	who := "another process"
	if b, err := os.ReadFile(filepath.Join(dir, HolderFile)); err == nil {
		var pid, started string
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "pid "); ok {
				if _, err := strconv.Atoi(v); err == nil {
					pid = v
				}
			}
			if v, ok := strings.CutPrefix(line, "started "); ok {
				if _, err := time.Parse(time.RFC3339, v); err == nil {
					started = v
				}
			}
		}
		if pid != "" {
			who = "process " + pid
			if started != "" {
				who += " (started " + started + ")"
			}
		}
	}
	return fmt.Errorf("local: %w: %s holds %s; one scp-task per data directory: stop it, or give this one another "+
		"--data-dir (DATA_DIR) and listen addresses of its own (--listen, --portal-listen, --health-listen)",
		ErrDataDirInUse, who, filepath.Join(dir, LockFile))
}
