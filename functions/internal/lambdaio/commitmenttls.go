package lambdaio

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/dicom-ingest/dicom-ingest/shared/commitreport"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// CommitmentTLSEnv names the commitment function's tls:// peers' settings:
// a JSON object, commitreport.TLSPeers, by AE title (infra/config's
// CommitmentTLS renders it): each peer's CA, public, and the ARN of the
// secret of our client certificate for it, never a secret's value.
const CommitmentTLSEnv = "COMMITMENT_TLS"

// ClientCredentialMaxAge is how long a client certificate read from its
// secret is used before it is read again: a certificate rotated in Secrets
// Manager is presented from then on, or at once after a failed handshake.
const ClientCredentialMaxAge = 15 * time.Minute

// A client certificate's secret that could not be read (Secrets Manager out
// of reach, a wrong ARN, a grant missing) is not read again before a backoff
// window ends: ClientSecretRetryFirst after the first failure, doubling after
// each failure up to ClientSecretRetryMax, each window drawn within
// clientSecretRetryJitter of that (execution environments that failed
// together do not call together again) and never longer than
// ClientSecretRetryMax. Within it the read's failure is returned at once, no
// report waiting on a call bound to fail; the first read that succeeds ends
// the backoff. A read that failed because the report's context ended starts
// no window.
const (
	ClientSecretRetryFirst = 10 * time.Second
	ClientSecretRetryMax   = 5 * time.Minute
	// clientSecretRetryJitter is the share by which a window is drawn
	// shorter or longer.
	clientSecretRetryJitter = 0.2
)

// ClientSecretUnreadLog is logged once per backoff window of a client
// certificate's secret that could not be read, with the AE title, the
// secret's ARN (never its value), the failure and the wait before the next
// read (retry_in).
const ClientSecretUnreadLog = "commitment: client certificate secret not read; not read again before the backoff ends"

// parseCommitmentTLS reads CommitmentTLSEnv and checks it against the
// peers: each tls:// peer has its CA (a bundle tlstrust.ParseCAs takes) and
// a secret, and only tls:// peers have settings.
func parseCommitmentTLS(v string, peers commitreport.Peers) (commitreport.TLSPeers, error) {
	out := commitreport.TLSPeers{}
	if v != "" {
		dec := json.NewDecoder(strings.NewReader(v))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&out); err != nil {
			return nil, fmt.Errorf("lambdaio: %s: %w", CommitmentTLSEnv, err)
		}
	}
	for _, ae := range slices.Sorted(maps.Keys(peers)) {
		if _, ok := out[ae]; peers[ae].TLS && !ok {
			return nil, fmt.Errorf("lambdaio: %s: no CA and client certificate for %s, a tls:// peer of COMMITMENT_PEERS", CommitmentTLSEnv, ae)
		}
	}
	for _, ae := range slices.Sorted(maps.Keys(out)) {
		s := out[ae]
		switch _, _, err := tlstrust.ParseCAs([]byte(s.CA)); {
		case !peers[ae].TLS:
			return nil, fmt.Errorf("lambdaio: %s: %s is not a tls:// peer of COMMITMENT_PEERS", CommitmentTLSEnv, ae)
		case err != nil:
			return nil, fmt.Errorf("lambdaio: %s: the CA of %s: %w", CommitmentTLSEnv, ae, err)
		case s.ClientSecretARN == "":
			return nil, fmt.Errorf("lambdaio: %s: %s names no client certificate secret", CommitmentTLSEnv, ae)
		}
	}
	return out, nil
}

// ClientSecret is the JSON a client certificate's secret holds: dicom.tls's
// form (infra/stack's TLSSecretCertificateKey and TLSSecretPrivateKeyKey).
type ClientSecret struct {
	Certificate string `json:"certificate"`
	PrivateKey  string `json:"privateKey"`
}

// ParseClientSecret reads a client certificate's secret as
// tlstrust.ClientCertificate reads every client certificate here (BCP 195's
// keys, clientAuth, its dates): a certificate refused for its dates alone
// (tlstrust.ErrNotValidNow) is returned with the refusal, as there. Its
// errors never quote the secret.
func ParseClientSecret(v string) (tls.Certificate, error) {
	var s ClientSecret
	if err := json.Unmarshal([]byte(v), &s); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			// Its message names a character of the value, no more; the offset is enough.
			return tls.Certificate{}, fmt.Errorf("the secret is not a JSON object of certificate and privateKey (syntax error at byte %d)", se.Offset)
		}
		return tls.Certificate{}, fmt.Errorf("the secret is not a JSON object of certificate and privateKey: %w", err)
	}
	if s.Certificate == "" || s.PrivateKey == "" {
		return tls.Certificate{}, errors.New("the secret's JSON needs both certificate and privateKey (PEM)")
	}
	cert, err := tlstrust.ClientCertificate([]byte(s.Certificate), []byte(s.PrivateKey))
	if errors.Is(err, tlstrust.ErrNotValidNow) {
		return cert, fmt.Errorf("client certificate: %w", err)
	}
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("client certificate: %w", err)
	}
	return cert, nil
}

// PeerCredentials gives the Reporter each tls:// peer's TLS client
// configuration (commitreport.Reporter.TLS): its own CA, and our client
// certificate for it, read from its secret on first use and kept for the
// execution environment, read again after MaxAge or once Forget was called
// (a failed handshake: the certificate may have been rotated). It is safe
// for concurrent use.
type PeerCredentials struct {
	Secrets SecretsAPI
	// MaxAge defaults to ClientCredentialMaxAge; Now to time.Now.
	MaxAge time.Duration
	Now    func() time.Time
	// Logger logs a secret not read (ClientSecretUnreadLog); nil logs nothing.
	Logger *slog.Logger

	peers   commitreport.TLSPeers
	pools   map[string]*x509.CertPool
	mu      sync.Mutex             // guards the maps, never held across a read
	certs   map[string]readCert    // by secret ARN
	unread  map[string]*unreadCert // by secret ARN: a read that failed, in its backoff window
	reading map[string]*secretRead // by secret ARN: the one read in flight
	gen     map[string]uint64      // by secret ARN: bumped by Forget; a read begun before records nothing
}

type readCert struct {
	cert tls.Certificate
	at   time.Time
}

// unreadCert is a secret whose read failed: the failure, returned until the window ends, and the backoff that
// draws the next window.
type unreadCert struct {
	err     error
	until   time.Time
	backoff *backoff.ExponentialBackOff
}

// error is the read's failure as every report of the window gets it, in the same words (logged once by the
// Reporter when it keeps the certificate read before).
func (u *unreadCert) error() error {
	return fmt.Errorf("%w (not read again before %s)", u.err, u.until.UTC().Format(time.RFC3339))
}

// NewPeerCredentials parses the peers' CAs (checked by ConfigFromEnv).
func NewPeerCredentials(peers commitreport.TLSPeers, sm SecretsAPI) (*PeerCredentials, error) {
	p := &PeerCredentials{Secrets: sm, peers: peers, pools: map[string]*x509.CertPool{}, certs: map[string]readCert{}, unread: map[string]*unreadCert{}, reading: map[string]*secretRead{}, gen: map[string]uint64{}}
	for ae, s := range peers {
		pool, _, err := tlstrust.ParseCAs([]byte(s.CA))
		if err != nil {
			return nil, fmt.Errorf("lambdaio: %s: the CA of %s: %w", CommitmentTLSEnv, ae, err)
		}
		p.pools[ae] = pool
	}
	return p, nil
}

// Config is the TLS client configuration of ae's peer (the Reporter names the server); a secret it reads ends
// with ctx (the report's: the invocation's deadline) or KeyReadTimeout, whichever comes first.
func (p *PeerCredentials) Config(ctx context.Context, ae string) (*tls.Config, error) {
	s, ok := p.peers[ae]
	if !ok {
		return nil, fmt.Errorf("lambdaio: %s: no TLS settings for %s", CommitmentTLSEnv, ae)
	}
	cert, err := p.cert(ctx, ae, s.ClientSecretARN)
	if errors.Is(err, tlstrust.ErrNotValidNow) && cert.Leaf != nil {
		// Its dates alone: the configuration with the refusal (commitreport.Reporter.TLS's contract), sent only
		// while valid, so that a PACS that asks for no client certificate still gets its report.
		return tlstrust.ClientConfig("", p.pools[ae], &cert), fmt.Errorf("lambdaio: the client certificate of %s: %w", ae, err)
	}
	if err != nil {
		return nil, fmt.Errorf("lambdaio: the client certificate of %s: %w", ae, err)
	}
	return tlstrust.ClientConfig("", p.pools[ae], &cert), nil
}

// cert is ae's client certificate: the one read before while it lasts, the failure of its backoff window while that
// lasts, or else read now. The lock guards the maps alone, never a read (up to KeyReadTimeout): reports to other
// AEs go on meanwhile, and the reports needing the same secret wait on its one read in flight, each until its own
// context ends.
func (p *PeerCredentials) cert(ctx context.Context, ae, arn string) (tls.Certificate, error) {
	for {
		p.mu.Lock()
		if c, err, ok := p.known(arn); ok {
			p.mu.Unlock()
			return c, err
		}
		f := p.reading[arn]
		if f == nil {
			// This report reads it, in its own goroutine and within its own context: no read outlives the
			// report that made it (a goroutine left reading would be frozen with the execution environment).
			f = &secretRead{done: make(chan struct{}), gen: p.gen[arn]}
			p.reading[arn] = f
			p.mu.Unlock()
			p.read(ctx, ae, arn, f)
			return f.cert, f.err
		}
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return tls.Certificate{}, fmt.Errorf("%s: secret %s not read before the report's end: %w", CommitmentTLSEnv, arn, ctx.Err())
		case <-f.done:
			if f.ctxEnded && ctx.Err() == nil {
				// The read was another report's, whose context ended: it said nothing of the secret; read it
				// again for this one.
				continue
			}
			return f.cert, f.err
		}
	}
}

// secretRead is a secret's read in flight, and its outcome once done is closed, shared by the reports that waited
// on it; ctxEnded: it failed because the context of the report that read ended; gen: the secret's generation
// when the read began (Forget since: what it finds is its waiters' alone, not recorded).
type secretRead struct {
	done     chan struct{}
	gen      uint64
	cert     tls.Certificate
	err      error
	ctxEnded bool
}

// known is the certificate read before and within MaxAge, or the failure of the secret's backoff window; ok false:
// neither, the secret is to be read. p.mu is held.
func (p *PeerCredentials) known(arn string) (tls.Certificate, error, bool) {
	if c, ok := p.certs[arn]; ok && p.now().Sub(c.at) < p.maxAge() {
		return c.cert, nil, true
	}
	if u := p.unread[arn]; u != nil && p.now().Before(u.until) {
		return tls.Certificate{}, u.error(), true
	}
	return tls.Certificate{}, nil, false
}

// read reads the secret, within ctx and KeyReadTimeout, and records what it found (the certificate, or the read's
// failure and its backoff window) and in f, whose waiters it then lets go, in one step under p.mu: a report coming
// after finds the outcome, never a read ended and none recorded. A read that panics (recovered by the AE's
// goroutine) lets its waiters go with an error and is no longer in flight: the next report reads again. A read
// begun before a Forget records nothing (it may have found the certificate before a rotation): its waiters alone
// get what it found.
func (p *PeerCredentials) read(ctx context.Context, ae, arn string, f *secretRead) {
	ended := false
	defer func() {
		if !ended { // panicking: the panic goes on once the read is released
			p.mu.Lock()
			defer p.mu.Unlock()
			f.err = fmt.Errorf("%s: secret %s: the read panicked", CommitmentTLSEnv, arn)
			p.release(arn, f)
		}
	}()
	// Bounded as every read of a secret here (KeyReadTimeout), and by the report's context: the invocation's
	// deadline.
	v, err := ReadSecrets(ctx, p.Secrets, Secret{Setting: CommitmentTLSEnv, ARN: arn})
	var cert tls.Certificate
	var perr error
	if err == nil {
		cert, perr = ParseClientSecret(v[0])
	}
	ended = true
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.release(arn, f)
	current := p.gen[arn] == f.gen
	switch {
	case err != nil && ctx.Err() != nil:
		// The report's own context ended (the invocation's deadline): the read said nothing of the secret, so
		// the next report reads it again rather than wait out a window.
		f.err, f.ctxEnded = err, true
	case !current:
		// Forgotten while in flight: its waiters get what it found, the next report reads the secret again.
		f.cert = cert
		f.err = errors.Join(err, perr)
		if f.err != nil {
			f.err = fmt.Errorf("secret %s: %w", arn, f.err)
		}
	case err != nil:
		u := p.unread[arn]
		if u == nil {
			b := backoff.NewExponentialBackOff()
			b.InitialInterval, b.MaxInterval, b.Multiplier, b.RandomizationFactor = ClientSecretRetryFirst, ClientSecretRetryMax, 2, clientSecretRetryJitter
			u = &unreadCert{backoff: b}
			p.unread[arn] = u
		}
		// The backoff caps the interval its jitter is drawn around, not the window drawn: cap that too, so that a
		// secret fixed is read within ClientSecretRetryMax, as the docs say.
		wait := min(u.backoff.NextBackOff(), ClientSecretRetryMax)
		u.err, u.until = err, p.now().Add(wait)
		if p.Logger != nil {
			p.Logger.Warn(ClientSecretUnreadLog, "called_ae", ae, "secret", arn, "retry_in", wait.Round(time.Millisecond).String(), "err", err)
		}
		f.err = u.error()
	case errors.Is(perr, tlstrust.ErrNotValidNow):
		// Not kept: read again at the next report, so that a rotation is taken at once.
		delete(p.unread, arn)
		f.cert, f.err = cert, fmt.Errorf("secret %s: %w", arn, perr)
	case perr != nil:
		delete(p.unread, arn)
		f.err = fmt.Errorf("secret %s: %w", arn, perr)
	default:
		delete(p.unread, arn)
		p.certs[arn] = readCert{cert: cert, at: p.now()}
		f.cert = cert
	}
}

// release ends f's read: no longer in flight, its waiters let go. p.mu is held.
func (p *PeerCredentials) release(arn string, f *secretRead) {
	if p.reading[arn] == f {
		delete(p.reading, arn)
	}
	close(f.done)
}

func (p *PeerCredentials) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *PeerCredentials) maxAge() time.Duration {
	if p.MaxAge <= 0 {
		return ClientCredentialMaxAge
	}
	return p.MaxAge
}

// Forget drops the certificate read for ae (a failed handshake with its PACS: it may have been rotated), so that
// it is read again on its next use; the other AEs' stay (their PACS took them). AEs sharing a secret share it.
func (p *PeerCredentials) Forget(ae string) {
	s, ok := p.peers[ae]
	if !ok {
		return
	}
	p.mu.Lock()
	delete(p.certs, s.ClientSecretARN)
	// A read begun before the handshake failed is not joined, and records nothing when it ends: the next use reads
	// anew.
	delete(p.reading, s.ClientSecretARN)
	p.gen[s.ClientSecretARN]++
	p.mu.Unlock()
}

// NewReporter is the commitment function's Reporter: associations to the
// sites' PACS, over DICOM TLS with each tls:// peer's own CA and client
// certificate (read from sm). A failed handshake is logged as
// commitreport.HandshakeFailedLog with its reason and the AE title (the
// stack's metric filter counts them by reason) and has that AE's
// certificate read again.
func NewReporter(c Config, sm SecretsAPI, log *slog.Logger) (*commitreport.Reporter, error) {
	r := &commitreport.Reporter{Peers: c.CommitmentPeers, AETitle: c.AETitle, Logger: log}
	if len(c.CommitmentTLS) == 0 {
		return r, nil
	}
	creds, err := NewPeerCredentials(c.CommitmentTLS, sm)
	if err != nil {
		return nil, err
	}
	creds.Logger = log
	r.TLS = creds.Config
	r.HandshakeFailed = func(ae, reason string) {
		log.Warn(commitreport.HandshakeFailedLog, "reason", reason, "called_ae", ae)
		creds.Forget(ae)
	}
	return r, nil
}
