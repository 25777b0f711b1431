package local

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// PrepareDataDir creates the data directory 0700, or makes one that is
// there private: it holds patient data and the key that turns log names
// back into UIDs. One that others than its owner may write in is refused
// (RefuseOthersWrite); one of this user's that others may only read is
// narrowed to its user. scp-task calls it before anything is written
// there (the log-name key), and local mode when it opens the directory.
func PrepareDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("local: data dir: %w", err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("local: data dir: %w", err)
	}
	if err := othersWrite(dir, st); err != nil {
		return err
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 && ownedByUs(st) {
		if err := os.Chmod(dir, perm&0o700); err != nil {
			return fmt.Errorf("local: data dir: keep it private: %w", err)
		}
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
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("local: %s: %w", dir, err)
	}
	return othersWrite(dir, st)
}

func othersWrite(dir string, st fs.FileInfo) error {
	if perm := st.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("local: %s: others than its owner may write in it (mode %v), so what it holds could have been replaced or redirected; check what it holds and chmod go-w it", dir, perm)
	}
	return nil
}
