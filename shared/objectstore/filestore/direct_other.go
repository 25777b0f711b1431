//go:build !linux

package filestore

import (
	"context"
	"errors"
	"io"
	"log/slog"
)

// Direct I/O is implemented for Linux only: elsewhere objects are written
// through the page cache.
func probeDirect(string, *slog.Logger) (bool, error) { return false, nil }

func alignedRing() []byte { return nil }

func (s *Store) writeTempDirect(context.Context, io.Reader) (string, int64, string, error) {
	return "", 0, "", errors.New("filestore: direct I/O is implemented for Linux only")
}
