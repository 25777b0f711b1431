package s3test

import (
	"net/http"
	"sync"
	"time"
)

// Clock is an emulator's own clock, as S3 has one apart from its clients':
// the real time plus an offset that a test moves forward. Each object's
// Last-Modified and each answer's Date are read from it, as S3 stamps
// both with its clock, never with a client's. A test ages what is stored
// (a run marker a dead task left) by advancing it, without waiting and
// without touching the clocks of the processes under test.
type Clock struct {
	mu     sync.Mutex
	offset time.Duration
}

// Now is the emulator's time, in GMT as S3 writes it.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset).In(gmt)
}

// Since is how long ago t was by the emulator's time.
func (c *Clock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// Advance moves the clock on by d: everything stored is d older to the
// emulator, and every later write is stamped d later.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// date stamps an answer with the emulator's time, as S3's Date header.
func (c *Clock) date(w http.ResponseWriter) {
	w.Header().Set("Date", c.Now().Format(http.TimeFormat))
}

// gmt is UTC under the name S3's dates give it (a fixed zone: no zoneinfo
// needed).
var gmt = time.FixedZone("GMT", 0)
