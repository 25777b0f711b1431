package pipeline

import (
	"context"
	"fmt"
	"io"

	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
)

// The pipeline's range requests start at firstChunk and double up to
// maxChunk, so a header is read in one or two requests and the pixel
// data that follows it is never fetched.
const (
	firstChunk = 32 << 10
	maxChunk   = 1 << 20
)

// newRangeSource reads the object info describes (its Key, Size bytes as
// Head says) through range requests. A skip keeps the requests growing:
// what follows a value skipped in a header is more header.
func newRangeSource(ctx context.Context, r ObjectReader, info ObjectInfo) *dataset.RangeSource {
	open := dataset.RangeOpener(func(off, n int64) (io.ReadCloser, error) {
		rc, err := openRange(ctx, r, info, off, n)
		if err != nil {
			return nil, fmt.Errorf("pipeline: read %d bytes at %d: %w", n, off, err)
		}
		return rc, nil
	})
	return dataset.NewRangeSource(open, info.Size, dataset.RangeOptions{First: firstChunk, Max: maxChunk})
}

// openRange reads a range of the object info describes: of the version its
// Head saw (info.ETag) when r can pin one (VersionReader), so that every
// read of one object's processing is of one version.
func openRange(ctx context.Context, r ObjectReader, info ObjectInfo, offset, length int64) (io.ReadCloser, error) {
	if v, ok := r.(VersionReader); ok && info.ETag != "" {
		return v.OpenVersionRange(ctx, info, offset, length)
	}
	return r.OpenRange(ctx, info.Key, offset, length)
}

// sourceReader exposes a Source as an io.Reader (input to the inflater).
type sourceReader struct{ s dataset.Source }

func (r sourceReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	b, err := r.s.Peek(len(p))
	if len(b) == 0 {
		if err == nil {
			err = io.EOF
		}
		return 0, err
	}
	n := copy(p, b)
	if _, err := r.s.Discard(n); err != nil {
		return 0, err
	}
	return n, nil
}
