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
	"time"

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

// A secret that could not be read (Secrets Manager out of reach, a wrong
// ARN, a grant missing), or that holds nothing usable (bad PEM, a key that
// is not the certificate's, a certificate not valid now), is not read again
// before a backoff window ends (secretCache, for the commitment function's
// client certificates and the audit feed's secrets alike): ClientSecretRetryFirst after the first failure, doubling after
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

// ClientSecretUnusableLog is logged once per backoff window of a client certificate's secret that was read but holds
// no usable certificate (not the JSON of certificate and privateKey, bad PEM, a key that is not the certificate's, a
// key BCP 195 does not allow), with the AE title, the secret's ARN (never its value), why and retry_in: the secret
// is read again when the window ends, as one that could not be read. One refused for its dates alone is logged by
// the Reporter (commitreport.OwnCertificateNotValidLog), once.
const ClientSecretUnusableLog = "commitment: client certificate secret holds no usable certificate; not read again before the backoff ends"

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
// (a failed handshake: the certificate may have been rotated), by the rule
// of every secret a function keeps (secretCache: a secret not read, or not
// holding a usable certificate, is not read again before its backoff
// window ends). It is safe for concurrent use.
type PeerCredentials struct {
	Secrets SecretsAPI
	// MaxAge defaults to ClientCredentialMaxAge; Now to time.Now.
	MaxAge time.Duration
	Now    func() time.Time
	// Logger logs a secret not read (ClientSecretUnreadLog) or holding no usable certificate
	// (ClientSecretUnusableLog); nil logs nothing.
	Logger *slog.Logger

	peers commitreport.TLSPeers
	pools map[string]*x509.CertPool
	certs *secretCache[tls.Certificate] // by secret ARN
}

// NewPeerCredentials parses the peers' CAs (checked by ConfigFromEnv).
func NewPeerCredentials(peers commitreport.TLSPeers, sm SecretsAPI) (*PeerCredentials, error) {
	p := &PeerCredentials{Secrets: sm, peers: peers, pools: map[string]*x509.CertPool{}}
	p.certs = newSecretCache[tls.Certificate](p.now, p.maxAge)
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

// cert is ae's client certificate from the secret arn, by secretCache's rule: AEs sharing a secret share it.
func (p *PeerCredentials) cert(ctx context.Context, ae, arn string) (tls.Certificate, error) {
	read := func(ctx context.Context) (tls.Certificate, error, error) {
		// Bounded as every read of a secret here (KeyReadTimeout), and by the report's context: the invocation's
		// deadline.
		v, err := ReadSecrets(ctx, p.Secrets, Secret{Setting: CommitmentTLSEnv, ARN: arn})
		if err != nil {
			return tls.Certificate{}, err, nil
		}
		cert, err := ParseClientSecret(v[0])
		if err != nil {
			return cert, nil, fmt.Errorf("secret %s: %w", arn, err)
		}
		return cert, nil, nil
	}
	return p.certs.get(ctx, arn, read, func(wait time.Duration, readErr, useErr error) {
		switch {
		case p.Logger == nil || errors.Is(useErr, tlstrust.ErrNotValidNow):
			// A certificate refused for its dates is the Reporter's to log (OwnCertificateNotValidLog, once).
		case readErr != nil:
			p.Logger.Warn(ClientSecretUnreadLog, "called_ae", ae, "secret", arn, "retry_in", wait.Round(time.Millisecond).String(), "err", readErr)
		default:
			p.Logger.Warn(ClientSecretUnusableLog, "called_ae", ae, "secret", arn, "retry_in", wait.Round(time.Millisecond).String(), "err", useErr)
		}
	})
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
	if s, ok := p.peers[ae]; ok {
		p.certs.forget(s.ClientSecretARN)
	}
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
