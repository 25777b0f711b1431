package dicomnet

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// A peer that has not authenticated can fail TLS handshakes, have its associations rejected, or send something
// other than an A-ASSOCIATE-RQ, as fast as it connects: one log line each made hundreds of kilobytes a second of logs. The lines of such failures are limited to
// logBurst in each logWindow, per kind; those held back are counted (dicom_ingest_tls_handshake_failures_total and
// dicom_ingest_associations_rejected_total count every one anyway, and the audit trail has them) and the next line
// let through says how many (suppressed). A failed handshake's line carries its reason, the metric's label
// (HandshakeFailureReason), so the lines let through and the counts by reason tell the same story.
const (
	logWindow = 10 * time.Second
	logBurst  = 10
)

// logLimiter lets through at most logBurst lines in each logWindow; its zero value is ready.
type logLimiter struct {
	mu         sync.Mutex
	start      time.Time // of the window
	lines      int       // let through in the window
	suppressed int       // held back since the last line let through
}

// allow says whether a line may be logged at now, and if so how many were held back before it.
func (l *logLimiter) allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= logWindow || now.Before(l.start) {
		l.start, l.lines = now, 0
	}
	if l.lines >= logBurst {
		l.suppressed++
		return false, 0
	}
	l.lines++
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

// log logs msg at level when l lets a line through, saying how many were held back before it.
func (l *logLimiter) log(log *slog.Logger, level slog.Level, msg string, attrs ...any) {
	ok, suppressed := l.allow(time.Now())
	if !ok {
		return
	}
	if suppressed > 0 {
		attrs = append(attrs, "suppressed", suppressed)
	}
	log.Log(context.Background(), level, msg, attrs...)
}
