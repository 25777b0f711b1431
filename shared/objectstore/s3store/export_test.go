package s3store

import "time"

// ErrPutTimeout is errPutTimeout, for tests.
var ErrPutTimeout = errPutTimeout

// WaitAborts waits for the aborts going on behind a Put's answer.
func (s *Store) WaitAborts() { s.aborts.Wait() }

// ExpireReady makes Ready's cached answer stale, as ReadyTTL passing would,
// so that a test needs no wait.
func (s *Store) ExpireReady() {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	s.readyUntil = time.Time{}
	for i := range s.writeFailed {
		s.writeFailed[i].until = time.Time{}
	}
}
