// Package servertls is the SCP's TLS server configuration for DICOM over TLS
// (PS3.15 Annex B): TLS 1.2 and 1.3 with the cipher suites of BCP 195, the
// server certificate and key and the client CA bundle read from files (or
// given as PEM text, as ECS injects secrets), and reloaded without a
// restart when asked (SIGHUP) or when the files change, so new associations
// get the new certificate while established ones go on undisturbed.
package servertls

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/config"
	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// CipherSuites are the TLS 1.2 cipher suites the server offers: tlstrust.CipherSuites, the one list of BCP 195's
// that the server and every client here share.
var CipherSuites = tlstrust.CipherSuites

// Source says where the certificate, its key and the client CA bundle come
// from: each a file path, or the PEM text itself (it starts with
// "-----BEGIN"), as an ECS task receives a Secrets Manager secret in an
// environment variable. PEM text cannot change, so only files are reloaded.
type Source struct {
	Cert, Key string
	// ClientCA, when set, makes a client certificate that chains to one of
	// its certificates mandatory; empty, no client certificate is asked for.
	ClientCA string
	// ClientCRL, when set, holds certificate revocation lists of the client
	// CAs: a client certificate (or intermediate) they list fails the
	// handshake. Each must be signed by a certificate of ClientCA.
	ClientCRL string
	// Describe, when set, is how an error names a setting (scp-task's
	// config.Config.Describe: its flag and its environment variable);
	// nil names it by its flag, --tls-cert.
	Describe func(flag string) string
}

// name is how errors name the setting flag.
func (s Source) name(flag string) string {
	if s.Describe != nil {
		return s.Describe(flag)
	}
	return "--" + flag
}

// PollInterval is how often the files are compared with what was loaded,
// besides the file watch: inotify misses changes on network file systems.
const PollInterval = time.Minute

// Reloader holds the current TLS configuration and loads a new one when
// asked or when its files change. It is safe for concurrent use.
type Reloader struct {
	src     Source
	log     *slog.Logger
	now     func() time.Time // time.Now; a test's clock
	mu      sync.Mutex       // one load, or one check of the CRLs, at a time
	current atomic.Pointer[loaded]
	// staleCRLs are the client CRLs in use already reported stale, so
	// that each is reported once (guarded by mu).
	staleCRLs map[crlKey]tlstrust.CRL

	expiresIn prometheus.GaugeFunc
	crlDue    *crlCollector
	reloads   *prometheus.CounterVec

	// Recheck, when set (before Watch runs and Reload is called), is called each time a load changes the
	// configuration and at every PollInterval, outside the lock, so that associations established under an
	// earlier trust are checked again with Refuses: a client certificate revoked, its CA removed or its
	// validity ended since their handshake (scp-task aborts them).
	Recheck func()
}

// loaded is one configuration and the bytes it was made from.
type loaded struct {
	config  *tls.Config
	leaf    *x509.Certificate
	cas     int
	revoked int               // serials listed by the client CRLs
	crls    []tlstrust.CRL    // the client CRLs, for their next updates
	digest  [sha256.Size]byte // of the certificate, key, CA and CRL bytes
}

// New loads src and returns a Reloader serving it. Metrics (the server
// certificate's expiry, the client CRLs' next updates and the reloads) go
// to reg when it is not nil.
func New(src Source, log *slog.Logger, reg prometheus.Registerer) (*Reloader, error) {
	return newReloader(src, log, reg, time.Now)
}

// newReloader is New with a clock, so that tests can let a CRL go stale.
func newReloader(src Source, log *slog.Logger, reg prometheus.Registerer, now func() time.Time) (*Reloader, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Reloader{
		src: src, log: log, now: now, staleCRLs: map[crlKey]tlstrust.CRL{},
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricnames.TLSReloads,
			Help: "Loads of the DICOM TLS certificate and client CA after the first, by result (loaded, failed).",
		}, []string{metricnames.TLSReloadResult}),
	}
	for _, result := range []string{metricnames.TLSReloadLoaded, metricnames.TLSReloadFailed} {
		r.reloads.WithLabelValues(result) // at 0 from the start, like the published counters' known series
	}
	// Seconds, not a timestamp, so an alarm can compare it with a threshold
	// (CloudWatch has no "now" to subtract a timestamp from).
	r.expiresIn = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: metricnames.TLSCertificateExpiresIn,
		Help: "Seconds until the DICOM TLS server certificate in use expires.",
	}, func() float64 { return r.Certificate().NotAfter.Sub(r.now()).Seconds() })
	r.crlDue = &crlCollector{r: r, desc: prometheus.NewDesc(metricnames.TLSClientCRLNextUpdateIn,
		"Seconds until the next update of the client CRL in use of each issuing CA (negative once past it: the list is stale but still applied).",
		[]string{"issuer"}, nil)}
	if reg != nil {
		for _, c := range []prometheus.Collector{r.expiresIn, r.crlDue, r.reloads} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("servertls: register metrics: %w", err)
			}
		}
	}
	l, err := load(src, now())
	if err != nil {
		return nil, err
	}
	r.use(l)
	return r, nil
}

// crlCollector exports, per client CRL in use, the seconds until its next
// update: seconds rather than a timestamp for the same reason as the
// certificate's expiry, and nothing at all without client CRLs.
type crlCollector struct {
	r    *Reloader
	desc *prometheus.Desc
}

func (c *crlCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *crlCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.r.now()
	for _, l := range c.r.current.Load().crls {
		if !l.NextUpdate.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, l.NextUpdate.Sub(now).Seconds(), l.Issuer)
		}
	}
}

// Config is the configuration to serve with: every handshake takes the
// configuration current at that moment.
func (r *Reloader) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return r.current.Load().config, nil
		},
	}
}

// Certificate is the server certificate in use.
func (r *Reloader) Certificate() *x509.Certificate { return r.current.Load().leaf }

// Reload reads the source again and, if it changed, serves the new
// configuration from the next handshake on. A source that no longer loads
// (a half-written file, a key that does not match the certificate, an
// expired certificate) is an error, and the current configuration stays.
func (r *Reloader) Reload() error {
	changed, err := r.reload()
	if changed {
		r.recheck()
	}
	return err
}

// reload is Reload but the recheck, under the lock; it reports whether the configuration changed.
func (r *Reloader) reload() (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, err := load(r.src, r.now())
	if err != nil {
		r.reloads.WithLabelValues(metricnames.TLSReloadFailed).Inc()
		return false, err
	}
	if l.digest == r.current.Load().digest {
		return false, nil
	}
	r.reloads.WithLabelValues(metricnames.TLSReloadLoaded).Inc()
	r.use(l)
	return true, nil
}

func (r *Reloader) recheck() {
	if r.Recheck != nil {
		r.Recheck()
	}
}

// Refuses reports why the client certificate of an established TLS connection would now fail the handshake
// under the configuration in use: verified again, at this moment, against the client CAs, the key usage and
// the checks of every handshake (tlstrust.CheckClientLeaf, the CRLs). Nil when it would pass, and when no
// client certificate is required.
func (r *Reloader) Refuses(cs *tls.ConnectionState) error {
	cfg := r.current.Load().config
	if cfg.ClientAuth != tls.RequireAndVerifyClientCert || cs == nil || len(cs.PeerCertificates) == 0 {
		return nil
	}
	intermediates := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		intermediates.AddCert(c)
	}
	chains, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: cfg.ClientCAs, Intermediates: intermediates,
		CurrentTime: r.now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return fmt.Errorf("client certificate no longer accepted: certificate %s: %w", tlstrust.NameOf(cs.PeerCertificates[0]), err)
	}
	st := *cs
	st.VerifiedChains = chains
	if err := cfg.VerifyConnection(st); err != nil {
		var ve *tls.CertificateVerificationError
		if errors.As(err, &ve) {
			err = ve.Err // refusing's wrapper carries the chain for the handshake's audit; the reason is inside
		}
		return fmt.Errorf("client certificate no longer accepted: %w", err)
	}
	return nil
}

func (r *Reloader) use(l *loaded) {
	r.current.Store(l)
	sum := sha256.Sum256(l.leaf.Raw)
	r.log.Info("TLS certificate loaded", "subject", l.leaf.Subject.String(), "issuer", l.leaf.Issuer.String(),
		"sha256", hex.EncodeToString(sum[:]), "not_after", l.leaf.NotAfter.UTC().Format(time.RFC3339),
		"client_cas", l.cas, "client_certificate_required", l.cas > 0, "revoked_client_certificates", l.revoked)
	r.checkCRLs()
}

// checkCRLs reports, once each, the client CRLs in use that are past their
// next update, whether they were loaded so or went stale since, and the
// issuers whose stale list a fresh one replaced. A stale list stays in use,
// as at load: it still refuses what it lists, and refusing every site of
// its CA instead would stop the hospital's imaging over a calendar date
// (the SCP cannot fetch a newer list itself). Callers hold r.mu.
func (r *Reloader) checkCRLs() {
	now := r.now()
	stale := map[crlKey]tlstrust.CRL{}
	fresh := map[string]tlstrust.CRL{} // by issuer, when none of its lists is stale
	for _, l := range r.current.Load().crls {
		if !l.Stale(now) {
			fresh[l.Issuer] = l
			continue
		}
		k := crlKey{l.Issuer, l.NextUpdate.UnixNano()}
		stale[k] = l
		if _, reported := r.staleCRLs[k]; !reported {
			r.log.Warn("client CRL past its next update: still applied, but revocations since are unknown until a fresh list is loaded",
				"crl_issuer", l.Issuer, "next_update", l.NextUpdate.UTC().Format(time.RFC3339))
		}
	}
	for _, l := range stale {
		delete(fresh, l.Issuer)
	}
	// An issuer whose list is no longer loaded at all is not "fresh again":
	// the load's own log line says what is in use.
	for _, l := range r.staleCRLs {
		if f, ok := fresh[l.Issuer]; ok {
			delete(fresh, l.Issuer) // once per issuer
			next := "none"          // a list without a next update never goes stale
			if !f.NextUpdate.IsZero() {
				next = f.NextUpdate.UTC().Format(time.RFC3339)
			}
			r.log.Info("client CRL fresh again", "crl_issuer", l.Issuer, "next_update", next,
				"stale_next_update", l.NextUpdate.UTC().Format(time.RFC3339))
		}
	}
	r.staleCRLs = stale
}

// crlKey tells lists apart for checkCRLs: a new stale list of the same CA
// is reported again, the same one reloaded is not. (A time.Time is no
// reliable map key: equal instants may differ in location.)
type crlKey struct {
	issuer     string
	nextUpdate int64 // Unix nanoseconds
}

// Watch reloads whenever a file of the source changes, until ctx ends: it
// watches the files' directories (so a file replaced by a rename, or a
// Kubernetes-style symlink swap, is seen) and also compares the files every
// PollInterval. Changes arriving together are loaded once. Every
// PollInterval it also checks whether a client CRL in use went stale,
// PEM text included (as in ECS, where the list cannot change but time
// passes).
func (r *Reloader) Watch(ctx context.Context) { r.watch(ctx, func() {}) }

// watch is Watch calling watching once the files are watched (or, when
// they cannot be, polled): a change from then on is seen.
func (r *Reloader) watch(ctx context.Context, watching func()) {
	dirs := map[string]bool{}
	for _, v := range []string{r.src.Cert, r.src.Key, r.src.ClientCA, r.src.ClientCRL} {
		if v != "" && !isPEM(v) {
			dirs[filepath.Dir(v)] = true
		}
	}
	if len(dirs) == 0 && r.src.ClientCRL == "" && r.src.ClientCA == "" {
		watching() // PEM text only and no client certificates: nothing can change
		return
	}
	var events <-chan fsnotify.Event
	var watchErrs <-chan error
	var w *fsnotify.Watcher
	var err error
	if len(dirs) > 0 {
		w, err = fsnotify.NewWatcher()
	}
	if w != nil {
		defer w.Close()
		for d := range dirs {
			if err = w.Add(d); err != nil {
				break
			}
		}
		events, watchErrs = w.Events, w.Errors
	}
	if err != nil {
		r.log.Warn("TLS files not watched; they are compared every poll interval instead", "err", err, "interval", PollInterval.String())
		events, watchErrs = nil, nil
	}
	poll := time.NewTicker(PollInterval)
	defer poll.Stop()
	watching()
	var settle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-events:
			// Wait for the writer to finish (a copy writes in several steps).
			settle = time.After(250 * time.Millisecond)
		case err := <-watchErrs:
			r.log.Warn("TLS file watch", "err", err)
		case <-settle:
			settle = nil
			r.reloadLogged()
		case <-poll.C:
			if len(dirs) > 0 {
				r.reloadLogged()
			}
			r.pollCRLs()
		}
	}
}

// pollCRLs is checkCRLs for the watch, between loads, then recheck: time passes for the certificates of
// established associations too.
func (r *Reloader) pollCRLs() {
	r.mu.Lock()
	r.checkCRLs()
	r.mu.Unlock()
	r.recheck()
}

// reloadLogged is Reload for the watch, which has nobody to return an error to.
func (r *Reloader) reloadLogged() {
	if err := r.Reload(); err != nil {
		r.log.Error("TLS certificate not reloaded; the previous one stays in use", "err", err)
	}
}

func isPEM(v string) bool { return config.IsPEM(v) }

// read returns the PEM bytes of the source value v of setting flag: the
// text itself, or the file it names, read by config.ReadFile (which never
// quotes a secret setting's value, the key's: its text without its PEM
// armour, base64 as some secret stores keep it, is read as a path). PEM
// text whose line breaks were flattened to "\n" (as some secret stores
// keep it) is restored.
func (s Source) read(flag, v string) ([]byte, error) {
	b, err := config.ReadPEM(flag, v)
	if err != nil {
		return nil, fmt.Errorf("servertls: %s: %w", s.name(flag), err)
	}
	return b, nil
}

// describe names a source value for messages without ever echoing a key.
func describe(v string) string {
	if isPEM(v) {
		return "the PEM text given"
	}
	return v
}

func load(src Source, now time.Time) (*loaded, error) {
	certPEM, err := src.read("tls-cert", src.Cert)
	if err != nil {
		return nil, err
	}
	keyPEM, err := src.read("tls-key", src.Key)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("servertls: %s %s with %s %s: %w", src.name("tls-cert"), describe(src.Cert), src.name("tls-key"), describe(src.Key), err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("servertls: %s %s: %w", src.name("tls-cert"), describe(src.Cert), err)
		}
	}
	if err := tlstrust.CheckValidity(leaf, now); err != nil {
		return nil, fmt.Errorf("servertls: %s %s: %w", src.name("tls-cert"), describe(src.Cert), err)
	}
	// BCP 195's keys, by the rule of the client certificates and their CAs:
	// Go's TLS serves an RSA key of 1024 bits.
	if err := tlstrust.CheckKey(leaf); err != nil {
		return nil, fmt.Errorf("servertls: %s %s: %w", src.name("tls-cert"), describe(src.Cert), err)
	}
	h := sha256.New()
	h.Write(certPEM)
	h.Write(keyPEM)
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		MaxVersion:   tls.VersionTLS13,
		CipherSuites: CipherSuites,
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.NoClientCert,
	}
	l := &loaded{config: cfg, leaf: leaf}
	if src.ClientCA != "" {
		caPEM, err := src.read("tls-client-ca", src.ClientCA)
		if err != nil {
			return nil, err
		}
		h.Write(caPEM)
		pool, cas, err := tlstrust.ParseCAs(caPEM)
		if err != nil {
			return nil, fmt.Errorf("servertls: %s %s: %w", src.name("tls-client-ca"), describe(src.ClientCA), err)
		}
		cfg.ClientCAs, cfg.ClientAuth, l.cas = pool, tls.RequireAndVerifyClientCert, len(cas)
		// VerifyConnection runs on every handshake, resumed ones included.
		cfg.VerifyConnection = refusing(tlstrust.CheckClientLeaf)
		if src.ClientCRL != "" {
			crlPEM, err := src.read("tls-client-crl", src.ClientCRL)
			if err != nil {
				return nil, err
			}
			h.Write(crlPEM)
			revoked, crls, err := tlstrust.ParseCRLs(crlPEM, cas)
			if err != nil {
				return nil, fmt.Errorf("servertls: %s %s: %w", src.name("tls-client-crl"), describe(src.ClientCRL), err)
			}
			l.revoked, l.crls = revoked.Len(), crls
			cfg.VerifyConnection = refusing(func(cs tls.ConnectionState) error {
				return errors.Join(tlstrust.CheckClientLeaf(cs), revoked.Check(cs))
			})
		}
	} else if src.ClientCRL != "" {
		return nil, fmt.Errorf("servertls: %s: needs %s, the CAs whose lists it holds", src.name("tls-client-crl"), src.name("tls-client-ca"))
	}
	copy(l.digest[:], h.Sum(nil))
	return l, nil
}

// refusing returns check as a VerifyConnection whose refusal carries the
// chain the client presented, as crypto/tls's own verification does
// (RequireAndVerifyClientCert fails with a *tls.CertificateVerificationError
// holding it), so that a refused certificate can be named in the audit
// trail and the log (dicomnet.Event.PeerCertificates). It changes nothing
// of what check refuses: its error, wrapped, fails the handshake as before.
func refusing(check func(tls.ConnectionState) error) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		err := check(cs)
		if err == nil || len(cs.PeerCertificates) == 0 {
			return err
		}
		return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
	}
}
