package tlstrust

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"sync"
	"time"
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
//
// A configuration read with its client certificate refused for its dates alone (cfg with an err wrapping
// ErrNotValidNow; ClientConfig sends such a certificate only while valid) is taken, and returned with its refusal as
// useErr, when the one kept presents no certificate valid now: none kept, or the same certificate read again (out of
// date at start, or expired since), or another out of date, is no renewal that failed, and nothing is told. When the
// one kept presents a certificate valid now (or none at all), the refused one is a renewal that did not load, as any
// failure.
func (g *LastGood) Take(cfg *tls.Config, err error) (use *tls.Config, useErr, notReloaded error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case err == nil:
		g.last, g.lastErr = cfg, ""
		return cfg, nil, nil
	case cfg != nil && errors.Is(err, ErrNotValidNow) && !presentable(g.last):
		g.last, g.lastErr = cfg, ""
		return cfg, err, nil
	case g.last == nil:
		return nil, err, nil
	}
	if err.Error() != g.lastErr {
		g.lastErr = err.Error()
		notReloaded = err
	}
	return g.last, nil, notReloaded
}

// presentable: cfg is a configuration whose client certificate, if it has one, is valid now.
func presentable(cfg *tls.Config) bool {
	if cfg == nil {
		return false
	}
	leaf := ClientLeaf(cfg)
	return leaf == nil || CheckValidity(leaf, time.Now()) == nil
}

// ClientLeaf is the client certificate cfg presents, nil when it has none.
func ClientLeaf(cfg *tls.Config) *x509.Certificate {
	if len(cfg.Certificates) == 0 || len(cfg.Certificates[0].Certificate) == 0 {
		return nil
	}
	if leaf := cfg.Certificates[0].Leaf; leaf != nil {
		return leaf
	}
	leaf, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
	if err != nil {
		return nil
	}
	return leaf
}
