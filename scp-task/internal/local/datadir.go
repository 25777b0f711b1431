package local

import (
	"fmt"
	"os"
)

// PrepareDataDir creates the data directory 0700, or makes one that is
// there private: it holds patient data and the key that turns log names
// back into UIDs. One that others than its owner may write in is refused:
// whoever may write there can put a symlink where a file of ours goes
// (events.log pointing into a file everybody reads) or swap the files
// themselves, and may have done so before this start, so narrowing it now
// would not undo that. One of this user's that others may only read is
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
	perm := st.Mode().Perm()
	switch {
	case perm&0o022 != 0:
		return fmt.Errorf("local: data dir %s: others than its owner may write in it (mode %v), so what it holds could have been replaced or redirected; check what it holds and chmod go-w it", dir, perm)
	case perm&0o077 != 0 && ownedByUs(st):
		if err := os.Chmod(dir, perm&0o700); err != nil {
			return fmt.Errorf("local: data dir: keep it private: %w", err)
		}
	}
	return nil
}
