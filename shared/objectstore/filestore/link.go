package filestore

import (
	"errors"
	"io/fs"
	"os"
)

// linkNoReplace hard-links tmp to final (never replacing it) and removes
// tmp once linked.
func linkNoReplace(tmp, final string) (bool, error) {
	if err := os.Link(tmp, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, err
	}
	// Only the temporary name is left to remove; the object is in place.
	_ = os.Remove(tmp)
	return true, nil
}
