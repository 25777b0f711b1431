package tlstrust

import (
	"crypto/tls"
	"sync"
)

// LastGood keeps the last TLS configuration that loaded, of one read again for each connection (a client
// certificate and its CA renewed on disk or in a secret store are used from the next connection on, without a
// restart): when a later read fails (a renewed file half written, a secret not read), the last one that loaded stays
// in use. The one rule of the clients that reload their files: the Storage Commitment reporter's, for each peer, and
// scp-task's audit feed. Its zero value holds none; it is safe for concurrent use.
type LastGood struct {
	mu      sync.Mutex
	last    *tls.Config
	lastErr string // the failure told last (Take's notReloaded), not told again until a read succeeds
}

// Take is what to use of a read's result cfg, err: cfg when err is nil (kept as the last good one); else the last
// good configuration with a nil error, and notReloaded err the first time this failure (by its text) follows a
// success, for the caller to log; with none kept yet, err.
func (g *LastGood) Take(cfg *tls.Config, err error) (use *tls.Config, useErr, notReloaded error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case err == nil:
		g.last, g.lastErr = cfg, ""
		return cfg, nil, nil
	case g.last == nil:
		return nil, err, nil
	}
	if err.Error() != g.lastErr {
		g.lastErr = err.Error()
		notReloaded = err
	}
	return g.last, nil, notReloaded
}

// Last is the configuration kept last, nil when none loaded yet.
func (g *LastGood) Last() *tls.Config {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.last
}
