package pipeline_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// cutOnce is a store whose first ranged read's body breaks off halfway, as
// an HTTP body does when the connection closes before Content-Length
// (net/http: io.ErrUnexpectedEOF); the next reads are whole.
type cutOnce struct {
	pipeline.ObjectReader
	mu  sync.Mutex
	cut bool
}

func (c *cutOnce) OpenRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	rc, err := c.ObjectReader.OpenRange(ctx, key, off, n)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil || c.cut || n < 2 {
		return rc, err
	}
	c.cut = true
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(io.LimitReader(rc, n/2), iotest.ErrReader(io.ErrUnexpectedEOF)), rc}, nil
}

// TestBodyCutShortIsTheStores: a ranged read whose body breaks off is the
// store failing (retried), never the object ending there: the object is
// not judged truncated for a dropped connection.
func TestBodyCutShortIsTheStores(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testenv.DICOMTestdataDir(t), "1.dcm"))
	if err != nil {
		t.Fatal(err)
	}
	f := pt.New()
	k := "incoming/2026/01/15/x/y/1.dcm"
	f.Objects.Add(k, data, pt.SCPMetadata("", "", "", sha(data)))
	p := f.Pipeline()
	p.Objects = &cutOnce{ObjectReader: f.Objects}
	res, err := p.ProcessObject(context.Background(), k)
	if err == nil {
		t.Fatalf("a body cut short is no error: valid %v, findings %+v", res.Valid, res.Findings)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "the body broke off after") {
		t.Errorf("error %v, want the body's breaking off", err)
	}
	// Retried, it reads the object whole.
	res, err = p.ProcessObject(context.Background(), k)
	if err != nil || !res.Valid {
		t.Errorf("retry: %v, valid %v, findings %+v", err, res.Valid, res.Findings)
	}
}
