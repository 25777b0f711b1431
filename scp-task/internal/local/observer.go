package local

import (
	"sync"
	"time"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/portal"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
)

// rateWindow is how far back instances/s looks.
const rateWindow = 10

// counters turns association events into the portal's live counters. It
// never blocks for long (the SCP calls it from association goroutines).
type counters struct {
	mu    sync.Mutex
	now   func() time.Time
	c     portal.Counters
	slots [rateWindow]struct {
		sec int64
		n   int64
	}
}

var _ dicomnet.Observer = (*counters)(nil)

func newCounters(now func() time.Time) *counters {
	return &counters{now: now, c: portal.Counters{Since: now().UTC()}}
}

// ObserveAssociation counts ev.
func (k *counters) ObserveAssociation(ev dicomnet.Event) {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch ev.Type {
	case dicomnet.EventAccepted:
		k.c.Associations++
		k.c.ActiveAssociations++
	case dicomnet.EventRejected:
		k.c.Rejected++
	case dicomnet.EventReleased:
		k.c.ActiveAssociations--
	case dicomnet.EventAborted:
		k.c.Aborted++
		k.c.ActiveAssociations--
	case dicomnet.EventStored:
		k.c.Instances++
		k.c.Bytes += ev.Bytes
		sec := k.now().Unix()
		s := &k.slots[sec%rateWindow]
		if s.sec != sec {
			s.sec, s.n = sec, 0
		}
		s.n++
	case dicomnet.EventStoreFailed:
		k.c.Failures++
	case dicomnet.EventEcho:
		k.c.Echoes++
	}
	if k.c.ActiveAssociations < 0 {
		// An abort before acceptance (say, of a connection that never sent
		// an A-ASSOCIATE-RQ) has no accept to balance it.
		k.c.ActiveAssociations = 0
	}
}

// snapshot returns the counters with the rate over the last rateWindow
// whole seconds.
func (k *counters) snapshot() portal.Counters {
	k.mu.Lock()
	defer k.mu.Unlock()
	c := k.c
	now := k.now().Unix()
	var n int64
	for _, s := range k.slots {
		if s.sec > now-rateWindow && s.sec <= now {
			n += s.n
		}
	}
	c.InstancesPerSecond = float64(n) / rateWindow
	return c
}
