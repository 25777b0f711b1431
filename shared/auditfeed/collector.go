package auditfeed

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// DefaultPort is the syslog-over-TLS port (RFC 5425).
const DefaultPort = 6514

// ParseURL reads a collector URL, tls://host[:port], and returns its
// host:port (port 6514 when left out) and host.
func ParseURL(s string) (addr, host string, err error) {
	// The collector is quoted without its user info and query, which
	// could hold a credential, in the error scp-task logs.
	quoted := logname.URL(s)
	u, err := url.Parse(s)
	if err != nil {
		return "", "", fmt.Errorf("auditfeed: collector: %w", logname.RedactURL(err, s))
	}
	if u.Scheme != "tls" {
		return "", "", fmt.Errorf("auditfeed: collector %q: want tls://host[:port] (syslog over TLS, RFC 5425)", quoted)
	}
	if u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", "", fmt.Errorf("auditfeed: collector %q: want tls://host[:port] and nothing more (no user info, path or query)", quoted)
	}
	host = u.Hostname()
	if host == "" {
		return "", "", fmt.Errorf("auditfeed: collector %q names no host", quoted)
	}
	port := u.Port()
	if port == "" {
		port = strconv.Itoa(DefaultPort)
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("auditfeed: collector %q: port %q out of range", quoted, port)
	}
	return net.JoinHostPort(host, port), host, nil
}

// ErrCA is in TLSConfig's error (errors.Is) when the collector CA is what
// is wrong, so that its caller can name where it came from (a flag and its
// variable, a secret).
var ErrCA = errors.New("auditfeed: the collector CA")

// ErrClientCertificate is in TLSConfig's error (errors.Is) when our client certificate or its key is what is
// wrong, so that its caller can name where it came from, as for ErrCA. With tlstrust.ErrNotValidNow (its dates
// alone: expired, or not yet valid) the configuration comes with it, usable: the caller warns rather than refuses.
var ErrClientCertificate = errors.New("auditfeed: client certificate")

// TLSConfig builds the client side of the syslog TLS connection: the
// collector's certificate must chain to caPEM and name host; certPEM and
// keyPEM, when given, are our client certificate for mutual TLS, as
// tlstrust.ClientCertificate reads it (a key CheckKey allows, clientAuth);
// the versions and cipher suites are tlstrust.ClientConfig's. caPEM is read as every CA bundle TLS relies on
// here (tlstrust.ParseCAs): nothing but certificates, at least one, each
// of a key CheckKey allows; else the error is an ErrCA.
//
// A client certificate refused for its dates alone (tlstrust.ErrNotValidNow) does not stop the feed's start: the
// audit trail itself does not depend on it. TLSConfig then returns the configuration and the refusal together:
// the configuration offers the certificate only while it is valid (tlstrust.ClientConfig checks it at each
// handshake the collector asks for it), so a delivery fails, and is sent again, until then; one that becomes
// valid, or expires, while in use is taken at the next handshake.
func TLSConfig(host string, caPEM, certPEM, keyPEM []byte) (*tls.Config, error) {
	pool, _, err := tlstrust.ParseCAs(caPEM)
	if err != nil {
		// AppendCertsFromPEM skipped junk without a word and took a CA of
		// a weak key, whose certificates anyone who breaks it could mint
		// for a collector of the name we dial.
		return nil, fmt.Errorf("%w: %w", ErrCA, err)
	}
	switch {
	case len(certPEM) > 0 && len(keyPEM) > 0:
		// The rule of every client certificate here (BCP 195's keys, clientAuth): Go's TLS presents an RSA key
		// of 1024 bits, with which anyone who factors it feeds the collector in our name.
		cert, err := tlstrust.ClientCertificate(certPEM, keyPEM)
		if errors.Is(err, tlstrust.ErrNoClientAuth) {
			// Presented as it was until the audit feed took tlstrust's client rule (deploy.md's upgrade step).
			return nil, fmt.Errorf("%w: %w: issue one whose extended key usage has clientAuth", ErrClientCertificate, err)
		}
		if errors.Is(err, tlstrust.ErrNotValidNow) {
			return tlstrust.ClientConfig(host, pool, &cert), fmt.Errorf("%w: %w", ErrClientCertificate, err)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrClientCertificate, err)
		}
		return tlstrust.ClientConfig(host, pool, &cert), nil
	case len(certPEM) > 0 || len(keyPEM) > 0:
		return nil, fmt.Errorf("%w: needs both the certificate and its key", ErrClientCertificate)
	}
	return tlstrust.ClientConfig(host, pool, nil), nil
}

// ErrHandshake is in Send's error (errors.Is) when the TLS handshake with the collector failed, or the collector
// answered our batch with a TLS alert (under TLS 1.3 its refusal of our client certificate comes so). Refused tells
// those that a rotation of the CA or client certificate may mend from those that time out or break.
var ErrHandshake = errors.New("TLS handshake failed")

// Refused reports whether err, Send's, is a failed handshake (ErrHandshake) in which a certificate was refused: the
// collector's TLS alert (it refused ours: the collector's client CA rotated), our verification of the collector's
// (*tls.CertificateVerificationError: its CA rotated), or our client certificate not valid now, which we do not
// present (tlstrust.ErrNotValidNow: renewed in its secret). A caller that keeps the CA and client certificate reads
// them again then (the auditfeed function). A handshake that timed out or was reset (a collector overloaded, a
// network breaking) is no rotation: reading them again at each failed batch would only add calls.
func Refused(err error) bool {
	if !errors.Is(err, ErrHandshake) {
		return false
	}
	_, verification := errors.AsType[*tls.CertificateVerificationError](err)
	return verification || isAlert(err) || errors.Is(err, tlstrust.ErrNotValidNow)
}

// Collector sends batches of syslog messages to one collector over TLS.
type Collector struct {
	Addr string      // host:port
	TLS  *tls.Config // from TLSConfig
	// LoadTLS, when set, is called for each connection, with the batch's context, instead of taking TLS: the CA
	// and client certificate read again (scp-task's files; the auditfeed function's secrets, as it keeps them), so
	// that renewed ones are used from the next batch on without a restart.
	LoadTLS func(ctx context.Context) (*tls.Config, error)
	// Timeout bounds connecting and, separately, one batch's exchange;
	// default 10s.
	Timeout time.Duration
}

// Send delivers msgs (RFC 5424 messages, unframed) over one new TLS
// connection and reports success only when the collector confirmed it, as
// far as TCP can tell.
//
// Syslog over TLS has no application acknowledgement, and a write that
// succeeded may still never reach a collector whose connection just died.
// So a batch ends with our TLS close_notify and a TCP half-close (our FIN),
// and counts as delivered only when the collector's TLS stream then ends
// cleanly (its close_notify, or its FIN at a record boundary; whatever it
// sent before is ignored) and, on Linux, the connection then closes without
// a reset: the collector acknowledged our FIN, so every byte before it, and
// sent its own. Linux resets a connection instead of closing it when its
// application closes the socket with bytes unread, or bytes come after it
// closed; so a clean close confirms that the collector's TCP received the
// whole batch and that its application read all of it out of the socket
// before closing.
//
// It confirms no more. A collector that reads the batch and drops it (one
// whose TLS library read it ahead, then refused our client certificate),
// or that shut down only its sending side and never read, closes as
// cleanly as one that kept it. Outside Linux the close is not checked: a
// collector that closed before the batch reached it, whose reset then
// comes after its end of stream, is taken for one that read it (Go's TLS
// reads a FIN at a record boundary as a clean end). A connection that
// breaks, resets or stalls fails the whole batch, which is then sent
// again: duplicates, never losses.
func (c *Collector) Send(ctx context.Context, msgs [][]byte) error {
	if len(msgs) == 0 {
		return nil
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	dialCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cfg := c.TLS
	if c.LoadTLS != nil {
		var err error
		if cfg, err = c.LoadTLS(ctx); err != nil {
			return fmt.Errorf("auditfeed: TLS client configuration for %s: %w", c.Addr, err)
		}
	}
	raw, err := (&net.Dialer{Timeout: timeout}).DialContext(dialCtx, "tcp", c.Addr)
	if err != nil {
		return fmt.Errorf("auditfeed: connect to %s: %w", c.Addr, err)
	}
	if cfg.ServerName == "" {
		// As tls.Dialer names it: the host dialled.
		host, _, err := net.SplitHostPort(c.Addr)
		if err != nil {
			return errors.Join(fmt.Errorf("auditfeed: %w", err), raw.Close())
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	conn := tls.Client(raw, cfg)
	defer conn.Close()
	if err := conn.HandshakeContext(dialCtx); err != nil {
		return fmt.Errorf("auditfeed: connect to %s: %w: %w", c.Addr, ErrHandshake, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	deadline := time.Now().Add(timeout)
	if err := conn.SetDeadline(deadline); err != nil {
		return fmt.Errorf("auditfeed: %s: %w", c.Addr, err)
	}
	w := bufio.NewWriterSize(conn, 64<<10)
	for _, m := range msgs {
		if _, err := w.Write(Frame(m)); err != nil {
			return fmt.Errorf("auditfeed: send to %s: %w", c.Addr, refusal(conn, err))
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("auditfeed: send to %s: %w", c.Addr, refusal(conn, err))
	}
	// tls.Conn.CloseWrite sends only the close_notify; the TCP half-close
	// (our FIN) is the socket's.
	if err := conn.CloseWrite(); err != nil {
		return fmt.Errorf("auditfeed: close to %s: %w", c.Addr, refusal(conn, err))
	}
	tcp, ok := conn.NetConn().(*net.TCPConn)
	if !ok {
		return fmt.Errorf("auditfeed: %s: not a TCP connection (%T)", c.Addr, conn.NetConn())
	}
	if err := tcp.CloseWrite(); err != nil {
		return fmt.Errorf("auditfeed: close to %s: %w", c.Addr, refusal(conn, err))
	}
	// Whatever the collector says before closing is ignored; a clean end
	// of stream, then a clean close, confirm the batch.
	if _, err := io.Copy(io.Discard, conn); err != nil {
		return fmt.Errorf("auditfeed: %s did not confirm the batch: %w", c.Addr, refusal(conn, err))
	}
	if err := confirmClosed(ctx, tcp, deadline); err != nil {
		return fmt.Errorf("auditfeed: %s did not confirm the batch: %w", c.Addr, err)
	}
	return nil
}

// refusal is err, a batch's failure after our side of the handshake, as a failed handshake (ErrHandshake) when the
// collector's TLS alert caused it. Under TLS 1.3 the collector checks our client certificate after our side of the
// handshake is done: its refusal (an alert, then its close) comes while we write, and the connection it closed
// breaks our writes (broken pipe, reset) before we read. The alert is then still in the socket, ahead of the reset:
// read it (the connection is broken, so the read ends at once, or at the batch's deadline, which bounds it).
func refusal(conn *tls.Conn, err error) error {
	if isAlert(err) {
		return fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	if _, rerr := io.Copy(io.Discard, conn); isAlert(rerr) {
		return fmt.Errorf("%w: %w (%w)", ErrHandshake, rerr, err)
	}
	return err
}

// isAlert: err is the collector's TLS alert (crypto/tls reports it as a net.OpError of Op "remote error").
func isAlert(err error) bool {
	oe, ok := errors.AsType[*net.OpError](err)
	return ok && oe.Op == "remote error"
}

// TLSNotReloadedLog is logged when a collector's TLS client configuration, read again for each connection
// (ReloadTLS), does not load: the one loaded last stays in use. Once for each failure, until it loads again.
const TLSNotReloadedLog = "audit feed: TLS client configuration not reloaded; the previous one stays in use"

// ReloadTLS is a Collector's LoadTLS of load, the TLS client configuration read again for each connection
// (scp-task's files, the auditfeed function's secrets), by the rule of every client that does (tlstrust.LastGood),
// starting from initial (nil: none yet): when it does not load (a file half written, a secret not read, a renewal
// not valid now), the one loaded last stays in use, logged once (TLSNotReloadedLog); with none loaded yet, the
// failure fails the batch. A certificate out of date read again unchanged (or with none valid kept) is no renewal
// that failed: it is used, sent only while valid (tlstrust.ClientConfig), so that a collector that asks for none
// still takes the batch, and one that asks for it fails the handshake.
func ReloadTLS(initial *tls.Config, load func(context.Context) (*tls.Config, error), log *slog.Logger) func(context.Context) (*tls.Config, error) {
	last := &tlstrust.LastGood{}
	if initial != nil {
		last.Take(initial, nil)
	}
	return func(ctx context.Context) (*tls.Config, error) {
		use, err, notReloaded := last.Take(load(ctx))
		if notReloaded != nil && log != nil {
			log.Warn(TLSNotReloadedLog, "err", notReloaded)
		}
		if use != nil && errors.Is(err, tlstrust.ErrNotValidNow) {
			return use, nil
		}
		return use, err
	}
}
