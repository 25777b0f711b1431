package journal

import (
	"context"
	"fmt"
	"io"
)

// Fill reads r into buf until buf is full or r ends, checking ctx between
// reads: how a store takes an object into a record's buffer to learn
// whether it fits. It returns len(buf) while more may follow, less at the
// end of r. A read error is wrapped as "read object", ctx's as it is.
func Fill(ctx context.Context, r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, err := r.Read(buf[n:])
		n += m
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("read object: %w", err)
		}
	}
	return n, nil
}
