package dicomnet

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"
)

// ErrIncomplete is returned (wrapped) by a C-STORE dataset reader when the association breaks before the end of
// the object: peer A-ABORT, connection closed, timeout or protocol error. The handler must discard the object.
var ErrIncomplete = errors.New("dicomnet: data set incomplete")

// ErrObjectTooLarge is returned by a C-STORE dataset reader once the data set exceeds Server.MaxObjectSize.
var ErrObjectTooLarge = errors.New("dicomnet: data set exceeds the maximum object size")

// errReaderClosed is returned by a data set reader used after its handler returned.
var errReaderClosed = errors.New("dicomnet: data set reader used after ServeCStore returned")

// datasetReader streams one data set straight from the connection's read buffer, PDV by PDV and PDU by PDU. It
// never holds more than the bufio buffer; while the handler does not read, neither do we.
type datasetReader struct {
	a        *association
	ctxID    byte
	fragLeft uint32
	last     bool
	done     bool
	n        int64
	limit    int64 // 0 = unlimited
	tooLarge bool
	// err is what Read returns once the data set cannot continue, and end the event that stopped it (a peer
	// abort, a closed connection, a timeout, a protocol error), which the service returns to the serve loop.
	err error
	end rxEvent
	// closed is set when the handler returns: a reader leaked to another goroutine must not reach the
	// connection's (pooled, later reused) read buffer.
	closed atomic.Bool
}

func (a *association) newDataSet(ctxID byte, limit int64) *datasetReader {
	return &datasetReader{a: a, ctxID: ctxID, limit: limit}
}

// stop ends the data set with the event rx.
func (d *datasetReader) stop(rx rxEvent) error {
	d.end = rx
	d.err = fmt.Errorf("%w: %w", ErrIncomplete, describe(rx))
	return d.err
}

func (d *datasetReader) Read(p []byte) (int, error) {
	if d.closed.Load() {
		return 0, errReaderClosed
	}
	if d.err != nil {
		return 0, d.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for d.fragLeft == 0 {
		if d.last {
			d.done = true
			return 0, io.EOF
		}
		if err := d.nextFragment(); err != nil {
			return 0, err
		}
	}
	if d.tooLarge {
		return 0, ErrObjectTooLarge
	}
	if d.limit > 0 && d.n+int64(min(uint32(len(p)), d.fragLeft)) > d.limit {
		d.tooLarge = true
		return 0, ErrObjectTooLarge
	}
	n, err := d.a.br.Read(p[:min(uint32(len(p)), d.fragLeft)])
	d.fragLeft -= uint32(n)
	d.n += int64(n)
	if err != nil {
		return n, d.stop(d.a.readFailed(err))
	}
	if d.fragLeft == 0 && d.last {
		d.done = true
	}
	return n, nil
}

// nextFragment moves to the next data set PDV, reading the next P-DATA-TF header when the current PDU is used up.
func (d *datasetReader) nextFragment() error {
	a := d.a
	if a.reader.pduLeft == 0 {
		if rx := a.nextPDataTF(); rx.ev != evtNone {
			return d.stop(rx)
		}
	}
	v, rx := a.readPDVHeader()
	if rx.ev != evtNone {
		return d.stop(rx)
	}
	if v.command || v.ctxID != d.ctxID {
		return d.stop(a.protocolError(fmt.Errorf("dicomnet: unexpected PDV (context %d, command %v) inside a data set on context %d", v.ctxID, v.command, d.ctxID)))
	}
	d.fragLeft, d.last = v.n, v.last
	return nil
}

// drain discards the rest of the data set. It returns an error if the association broke first.
func (d *datasetReader) drain() error {
	for d.err == nil {
		if d.fragLeft > 0 {
			n, err := d.a.br.Discard(int(d.fragLeft))
			d.fragLeft -= uint32(n)
			d.n += int64(n)
			if err != nil {
				return d.stop(d.a.readFailed(err))
			}
			continue
		}
		if d.last {
			d.done = true
			return nil
		}
		if err := d.nextFragment(); err != nil {
			return err
		}
	}
	return d.err
}
