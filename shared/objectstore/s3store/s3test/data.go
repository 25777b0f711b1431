package s3test

import (
	"errors"
	"io"
	"math/rand/v2"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/internal/crcnvme"
)

// Data is a deterministic pseudo-random object of a given size, generated
// while it is read so that tests can stream gigabytes without holding them.
type Data struct {
	n, off int64
	rng    *rand.ChaCha8
}

// NewData returns size bytes determined by seed.
func NewData(seed uint64, size int64) *Data {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return &Data{n: size, rng: rand.NewChaCha8(s)}
}

func (d *Data) Read(p []byte) (int, error) {
	if d.off >= d.n {
		return 0, io.EOF
	}
	if rem := d.n - d.off; int64(len(p)) > rem {
		p = p[:rem]
	}
	n, _ := d.rng.Read(p)
	d.off += int64(n)
	return n, nil
}

// Bytes returns the whole object of NewData(seed, size).
func Bytes(seed uint64, size int64) []byte {
	b, _ := io.ReadAll(NewData(seed, size))
	return b
}

// ErrInjected is what FailingReader returns.
var ErrInjected = errors.New("s3test: injected reader failure")

// FailingReader yields the first n bytes of r, then fails with
// ErrInjected, as a C-STORE dataset reader does when the association is
// aborted mid-object.
func FailingReader(r io.Reader, n int64) io.Reader {
	return io.MultiReader(io.LimitReader(r, n), errReader{})
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, ErrInjected }

// CRC64NVME returns the base64 CRC-64/NVME of b, as S3 reports it.
func CRC64NVME(b []byte) string { return crcnvme.Base64(b) }
