package local

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// PrepareDataDir creates the data directory 0700, or makes one that is
// there private: it holds patient data and the key that turns log names
// back into UIDs. One that others than its owner may write in is refused
// (RefuseOthersWrite); one of this user's that others may only read is
// narrowed to its user, and so is every file of this user's in it that
// others may read or write (the databases with their -wal and -shm, the
// event log, the lock and its holder, the log-name key: each is created
// 0600, but one an older build or a hand left wider kept its mode). The
// objects are written 0600 in subdirectories only the data directory
// leads to; they are not walked. scp-task calls it before anything is
// written there (the log-name key), and local mode when it opens the
// directory.
func PrepareDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		if target, lerr := os.Readlink(dir); lerr == nil && errors.Is(err, fs.ErrExist) {
			// MkdirAll's own words for a dangling symlink, "file exists",
			// name nothing to do.
			return fmt.Errorf("local: data dir: %s is a symlink to %s, which is not there: create it, or remove the symlink", dir, target)
		}
		return fmt.Errorf("local: data dir: %w", err)
	}
	st, err := statDataDir(dir)
	if err != nil {
		return fmt.Errorf("local: data dir: %w", err)
	}
	if err := othersWrite(dir, st); err != nil {
		return err
	}
	if err := keepPrivate(dir, st); err != nil {
		return fmt.Errorf("local: data dir: keep it private: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("local: data dir: %w", err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue // the objects' directories; a symlink is not followed
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err == nil {
			err = keepPrivate(filepath.Join(dir, e.Name()), fi)
		}
		if err != nil {
			return fmt.Errorf("local: data dir: keep %s private: %w", e.Name(), err)
		}
	}
	return nil
}

// statDataDir is os.Stat of a directory othersWrite judges; a test stands
// in a filesystem that does not keep Unix modes.
var statDataDir = os.Stat

// keepPrivate narrows path, which fi describes, to its user when it is
// this user's and others may read, write or search it.
func keepPrivate(path string, fi fs.FileInfo) error {
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && ownedByUs(fi) {
		return os.Chmod(path, perm&0o700)
	}
	return nil
}

// RefuseOthersWrite refuses a directory that is there and that others
// than its owner may write in (group or others writable, sticky as /tmp
// or not): whoever may write there can put a symlink where a file or
// directory of ours goes (events.log into a file everybody reads,
// incoming/ into a directory of their own, where they can delete what was
// acknowledged) or swap what is there, and may have done so before this
// start. Checking it is up to the user, so nothing is narrowed.
func RefuseOthersWrite(dir string) error {
	st, err := statDataDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("local: %s: %w", dir, err)
	}
	return othersWrite(dir, st)
}

// othersWrite refuses dir, which st describes, when others than its owner
// may write in it, saying what to do: chmod go-w, or, on a filesystem
// that does not keep Unix modes (keepsModes), where chmod cannot help,
// another directory. Whether dir was made a moment ago (the start's first
// on WSL's /mnt/c) or by an earlier start, the advice is the same.
func othersWrite(dir string, st fs.FileInfo) error {
	perm := st.Mode().Perm()
	if perm&0o022 == 0 {
		return nil
	}
	refusal := fmt.Errorf("local: %s: others than its owner may write in it (mode %v), so what it holds could have been replaced or redirected; check what it holds and chmod go-w it", dir, perm)
	wide, ok, err := keepsModes(dir)
	if !ok {
		refusal = fmt.Errorf("local: %s: others than its owner may write in it (mode %v), and a directory made mode 0700 there, reads back mode %v: its filesystem does not keep Unix modes (as WSL's /mnt/c drives, FAT and SMB mounts), so chmod cannot help; choose a data directory on a Linux filesystem, such as one under your home", dir, perm, wide)
	}
	return errors.Join(refusal, err)
}

// keepsModes reports whether dir's filesystem keeps Unix modes: a
// directory made 0700 in it, and removed at once, reads back no wider
// (else its mode, ok false). One that cannot be made tells nothing (ok);
// err says the probe could not be removed.
func keepsModes(dir string) (mode fs.FileMode, ok bool, err error) {
	probe, err := os.MkdirTemp(dir, ".mode-probe-")
	if err != nil {
		return 0, true, nil
	}
	st, serr := statDataDir(probe)
	if err := os.Remove(probe); err != nil {
		return 0, true, fmt.Errorf("local: remove the directory made to see whether the filesystem keeps Unix modes: %w", err)
	}
	if serr != nil {
		return 0, true, nil
	}
	return st.Mode().Perm(), st.Mode().Perm()&0o077 == 0, nil
}
