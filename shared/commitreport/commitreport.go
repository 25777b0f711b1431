// Package commitreport delivers Storage Commitment results to the AE that asked, as an N-EVENT-REPORT-RQ: on
// that AE's own association while it is open and we hold the SCP role on it, otherwise on an association we
// open to the address configured for its AE title, proposing the Push Model with SCP/SCU role selection SCU 0,
// SCP 1 (PS3.4 J.3.3.1, PS3.7 D.3.3.4). A Reporter is the pipeline's CommitmentReporter.
package commitreport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/accesscontrol"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/commitment"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// Peers maps a requesting AE title to where its reports go.
type Peers map[string]Peer

// Peer is where a requesting AE takes its reports: a host:port, over plain DICOM or, with TLS, over DICOM TLS
// (PS3.15 Annex B) as the Reporter's TLS configuration has it.
type Peer struct {
	Addr string
	TLS  bool
	// ServerName, of a TLS peer, is the DNS name its certificate is checked against (and sent as SNI) when that
	// names a DNS name only, not the host of Addr it is dialled at; "": Addr's host (an IP address then checked
	// against the certificate's IP SANs).
	ServerName string
}

// TLSScheme marks a peer reached over DICOM TLS in ParsePeers' input: AE=tls://host:port.
const TLSScheme = "tls://"

// ServerNameParam names a TLS peer's server name in ParsePeers' input: AE=tls://host:port?serverName=NAME.
const ServerNameParam = "serverName"

// String is the peer as ParsePeers reads it: host:port, tls://host:port, or tls://host:port?serverName=NAME.
func (p Peer) String() string {
	switch {
	case p.TLS && p.ServerName != "":
		return TLSScheme + p.Addr + "?" + ServerNameParam + "=" + p.ServerName
	case p.TLS:
		return TLSScheme + p.Addr
	}
	return p.Addr
}

// CheckServerName reports what keeps name from being a TLS peer's server name, or nil: it must be a DNS name
// (dnsName), not an IP address (one is given as the host). The one rule of ParsePeers' ?serverName= and infra's
// sites[].pacs.tls.serverName.
func CheckServerName(name string) error {
	if name == "" {
		return errors.New("is empty: want the DNS name the PACS's certificate names")
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return fmt.Errorf("%q is an IP address: give it as the host, the certificate naming it as an IP SAN", name)
	}
	if why := dnsName(name, false); why != "" {
		return fmt.Errorf("%q is not a DNS name (%s)", name, why)
	}
	return nil
}

// dnsName says what keeps name from being a DNS name, or "": RFC 1123 labels of letters, digits and hyphens, 1 to
// 63 characters, neither starting nor ending with a hyphen, separated by dots, 253 characters at most; no
// wildcard, no trailing dot, the last label not digits only. The rule of a server name (CheckServerName) and of a
// peer's host that is no IP address (checkHost), which takes an underscore too (underscore): a host name as
// resolvers and /etc/hosts take it (a Docker Compose service, orthanc_pacs, which Go's resolver dials), where a
// certificate's name is held to RFC 1123.
func dnsName(name string, underscore bool) string {
	if len(name) > 253 {
		return "longer than 253 characters"
	}
	if last := name[strings.LastIndexByte(name, '.')+1:]; last != "" && strings.Trim(last, "0123456789") == "" {
		// 10.1.2 or 167837955: an IPv4 address as inet_aton and URL parsers read it (RFC 3696 §2: no top-level
		// label is all digits).
		return "its last label digits only, which reads as an IPv4 address"
	}
	for label := range strings.SplitSeq(name, ".") {
		switch {
		case label == "":
			return "an empty label"
		case len(label) > 63:
			return "a label longer than 63 characters"
		case label[0] == '-' || label[len(label)-1] == '-':
			return "a label starting or ending with a hyphen"
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' ||
				underscore && c == '_') {
				if underscore {
					return "a character other than a letter, digit, hyphen, underscore or dot"
				}
				return "a character other than a letter, digit, hyphen or dot"
			}
		}
	}
	return ""
}

// checkHost reports what keeps host, of a peer's host:port, from being dialled, or nil: it is an IP address, or a
// host name by the rule of a DNS name (dnsName), written relative or fully qualified (one trailing dot, rooted:
// the resolver appends no search domain; a certificate's names match it as without).
func checkHost(host string) error {
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if why := dnsName(strings.TrimSuffix(host, "."), true); why != "" {
		return fmt.Errorf("host %q is neither an IP address nor a DNS name (%s)", host, why)
	}
	return nil
}

// peerQueryKeys are the keys the query after a peer's port takes (?KEY=VALUE&…), each once. They are matched as
// spelt, case-sensitively as a URL's query keys are: any other key, one differing in letter case among them, is
// refused by its name, never ignored.
var peerQueryKeys = []string{ServerNameParam}

// parsePeerQuery reads the query after a peer's port (without its ?) as peerQueryKeys has them.
func parsePeerQuery(query string) (map[string]string, error) {
	want := "want ?" + strings.Join(peerQueryKeys, "=NAME&") + "=NAME"
	if query == "" {
		return nil, errors.New("nothing after ?; " + want)
	}
	got := map[string]string{}
	for kv := range strings.SplitSeq(query, "&") {
		key, value, hasValue := strings.Cut(kv, "=")
		if !slices.Contains(peerQueryKeys, key) {
			hint := ""
			if i := slices.IndexFunc(peerQueryKeys, func(k string) bool { return strings.EqualFold(k, key) }); i >= 0 {
				hint = " (keys are case-sensitive: " + peerQueryKeys[i] + ")"
			}
			return nil, fmt.Errorf("unknown query key %q%s; %s", key, hint, want)
		}
		if _, dup := got[key]; dup {
			return nil, fmt.Errorf("query key %s given twice", key)
		}
		if !hasValue {
			return nil, fmt.Errorf("query key %s without a value; %s", key, want)
		}
		got[key] = value
	}
	return got, nil
}

// ParsePeers reads `AE=[tls://]host:port[?serverName=NAME][,AE=…]` (--commitment-peers, COMMITMENT_PEERS): a
// peer is plain DICOM unless its address starts with tls://; a tls:// peer whose certificate names a DNS name
// only takes ?serverName=NAME (CheckServerName), the one query key (peerQueryKeys: spelt so, any other refused).
// The host is an IP address or a DNS name (checkHost). Spaces around entries are not significant; an AE title may
// appear once. An entry with a second = before its ?serverName= is refused: a title holding one (CT=1) cannot
// be a peer, and no host name holds one.
func ParsePeers(spec string) (Peers, error) {
	p := Peers{}
	for i, raw := range strings.Split(spec, ",") {
		entry := strings.TrimSpace(raw)
		if entry == "" {
			continue
		}
		ae, addr, ok := strings.Cut(entry, "=")
		ae, addr = strings.TrimSpace(ae), strings.TrimSpace(addr)
		if !ok {
			return nil, fmt.Errorf("commitreport: entry %d %q: want AE=host:port or AE=tls://host:port", i+1, entry)
		}
		if err := accesscontrol.CheckAETitle(ae); err != nil {
			return nil, fmt.Errorf("commitreport: entry %d %q: %w", i+1, entry, err)
		}
		var peer Peer
		if len(addr) >= len(TLSScheme) && strings.EqualFold(addr[:len(TLSScheme)], TLSScheme) {
			peer.TLS, addr = true, addr[len(TLSScheme):]
		} else if scheme, _, ok := strings.Cut(addr, "://"); ok {
			return nil, fmt.Errorf("commitreport: entry %d %q: %q is not a scheme here: want host:port (plain DICOM) or tls://host:port (DICOM TLS)", i+1, entry, scheme+"://")
		}
		if a, query, ok := strings.Cut(addr, "?"); ok {
			q, err := parsePeerQuery(query)
			if err != nil {
				return nil, fmt.Errorf("commitreport: entry %d %q: %w", i+1, entry, err)
			}
			name, ok := q[ServerNameParam]
			switch {
			case ok && !peer.TLS:
				return nil, fmt.Errorf("commitreport: entry %d %q: ?%s is for tls:// peers", i+1, entry, ServerNameParam)
			case ok:
				if err := CheckServerName(name); err != nil {
					return nil, fmt.Errorf("commitreport: entry %d %q: %s: %w", i+1, entry, ServerNameParam, err)
				}
			}
			addr, peer.ServerName = a, name
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" {
			return nil, fmt.Errorf("commitreport: entry %d %q: %q is not host:port", i+1, entry, addr)
		}
		if err := checkHost(host); err != nil {
			return nil, fmt.Errorf("commitreport: entry %d %q: %w", i+1, entry, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("commitreport: entry %d %q: port %q is not 1 to 65535", i+1, entry, port)
		}
		if _, dup := p[ae]; dup {
			return nil, fmt.Errorf("commitreport: entry %d %q: AE title %s given twice", i+1, entry, ae)
		}
		peer.Addr = addr
		p[ae] = peer
	}
	return p, nil
}

// String renders the peers as ParsePeers reads them, sorted by AE title.
func (p Peers) String() string {
	var out []string
	for _, ae := range slices.Sorted(maps.Keys(p)) {
		out = append(out, ae+"="+p[ae].String())
	}
	return strings.Join(out, ",")
}

// TLS reports whether any peer is reached over DICOM TLS.
func (p Peers) TLS() bool {
	for _, peer := range p {
		if peer.TLS {
			return true
		}
	}
	return false
}

// TLSPeers are the DICOM TLS settings of the tls:// peers by AE title where each has its own (the commitment
// function's COMMITMENT_TLS, a JSON object: infra/config renders it from sites[].pacs.tls, lambdaio reads it).
type TLSPeers map[string]TLSPeer

// TLSPeer is a tls:// peer's own CA, the PEM text its server certificate must chain to (public), and the ARN of
// the Secrets Manager secret holding our client certificate and key for it (never the secret's value).
type TLSPeer struct {
	CA              string `json:"ca"`
	ClientSecretARN string `json:"clientSecretArn"`
}

// The timers of the associations a Reporter opens, and of its wait for an answer on the requestor's own, as the
// conformance statement (3.2.3) gives them; each write is bounded by dicomnet.DefaultWriteTimeout.
const (
	// DefaultDialTimeout bounds connecting to the report address.
	DefaultDialTimeout = 10 * time.Second
	// DefaultResponseTimeout bounds each answer of the peer: the A-ASSOCIATE-AC or -RJ, the N-EVENT-REPORT-RSP
	// (on our association or the requestor's), the A-RELEASE-RP.
	DefaultResponseTimeout = 30 * time.Second
	// ARTIMTimeout bounds the wait for the peer to close after a rejection or an abort.
	ARTIMTimeout = 2 * time.Second
)

// Reporter delivers results. The zero value reports nothing (no peers, no server); set what applies.
type Reporter struct {
	// Server is the SCP the requests came in on, when it runs in this process: the report goes on the
	// requestor's association while that is open. Nil (the AWS function) always opens an association.
	Server *dicomnet.Server
	// Peers are the report addresses by requesting AE title.
	Peers Peers
	// AETitle is ours, the calling AE of the associations we open (the AE the PACS sent to).
	AETitle string
	// DialTimeout and ResponseTimeout bound connecting and each wait for the peer (defaults DefaultDialTimeout
	// and DefaultResponseTimeout).
	DialTimeout, ResponseTimeout time.Duration
	// TLS is the client configuration of the peer of AE title ae when it is reached over DICOM TLS, called for
	// each such association with the report's context (what it reads, a secret, ends with it), so that
	// certificates renewed on disk, or in Secrets Manager, are used from the next one on: one for all peers (scp-task's flags), or each site's CA and client certificate (the commitment
	// function's). The Reporter sets the server name to the peer's ServerName, or its host. tlstrust.ClientConfig makes it. Nil: a
	// TLS peer's report fails (ErrNoTLS). When it
	// fails for an AE after it once succeeded for it (a renewed file half written, a secret not read), the
	// configuration it returned last for that AE stays in use, logged (TLSNotReloadedLog), as the listener keeps
	// its certificate. It may return a configuration together with an error wrapping tlstrust.ErrNotValidNow (our
	// client certificate refused for its dates alone, where it was read named): the configuration is used, its
	// certificate sent only if the PACS asks for one and only while valid (tlstrust.ClientConfig), so that a PACS
	// that asks for none still gets its report; the refusal is logged once (OwnCertificateNotValidLog).
	TLS func(ctx context.Context, ae string) (*tls.Config, error)
	// HandshakeFailed, when set, is called with the AE title of the peer and the reason
	// (dicomnet.HandshakeFailureReason) of each failed TLS handshake with it: the metrics, and whatever that
	// AE's configuration should read again (its own only: another AE's PACS took its certificate).
	HandshakeFailed func(ae, reason string)
	// Dial replaces the TCP dialer (tests).
	Dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	Logger *slog.Logger

	tlsMu      sync.Mutex
	tlsLast    map[string]*tlstrust.LastGood // by AE title: what TLS returned last for it, and the failure logged last
	ownCertErr map[string]string             // by AE title: the certificate (or refusal) of OwnCertificateNotValidLog logged last
}

var _ pipeline.CommitmentReporter = (*Reporter)(nil)

// ErrNoPeer: the requesting AE has no report address and its association is gone.
var ErrNoPeer = errors.New("commitreport: no report address for the AE title")

// ErrNoTLS: the requesting AE's peer is reached over DICOM TLS and the Reporter has no TLS configuration.
var ErrNoTLS = errors.New("commitreport: the peer is reached over DICOM TLS and no TLS client configuration is set")

// HandshakeFailedLog is the message of the line the commitment function logs for each failed TLS handshake with
// a peer, its reason in the field "reason": the stack's metric filter counts them (it has no Prometheus).
const HandshakeFailedLog = "commitment: TLS handshake with the PACS failed"

// TLSNotReloadedLog is the log message of a TLS client configuration that did not load (a renewed file half
// written, a key that does not match): the one read last stays in use, as the listener keeps its certificate.
const TLSNotReloadedLog = "commitreport: TLS client configuration not reloaded; the previous one stays in use"

// HandshakeOwnCertificateNotValid is the reason of a handshake that failed because the PACS asked for our client
// certificate and it is not valid now (tlstrust.ErrNotValidNow: expired, or not yet valid), which every PACS would
// refuse, so it is not sent (tlstrust.ClientConfig); or not attempted when TLS made no configuration to try it with.
// Counted as the failed handshakes are (HandshakeFailed). A PACS that asks for no client certificate is not affected.
const HandshakeOwnCertificateNotValid = "own_certificate_not_valid"

// HandshakeFailureReasons are the reasons a Reporter counts failed handshakes under: the listener's
// classification (dicomnet.HandshakeFailureReasons) and HandshakeOwnCertificateNotValid.
var HandshakeFailureReasons = append(slices.Clone(dicomnet.HandshakeFailureReasons), HandshakeOwnCertificateNotValid)

// OwnCertificateNotValidLog is the log message, logged once per peer until the certificate changes (or was valid in
// between), of our client certificate not valid now: the report is still tried, and fails if the PACS asks for a
// client certificate. Its err names the certificate and its dates, and where it was read (a flag and its variable,
// a secret's ARN) when it was refused on reading.
const OwnCertificateNotValidLog = "commitreport: our client certificate is not valid now; reports to a PACS that asks for one fail"

// HandshakeError is a failed TLS handshake with a peer: its reason, by the one classification of failed
// handshakes (dicomnet.HandshakeFailureReason), and crypto/tls's error.
type HandshakeError struct {
	Reason string
	Err    error
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("TLS handshake failed (%s): %v", e.Reason, e.Err)
}

func (e *HandshakeError) Unwrap() error { return e.Err }

// MaxReport implements pipeline.CommitmentReporter: the deadlines one report may meet in turn, summed: the answer on
// the requestor's own association (with a Server), connecting, the TLS handshake (with a tls:// peer), the
// A-ASSOCIATE-AC, the N-EVENT-REPORT-RSP and the A-RELEASE-RP, and ARTIM after an abort. The writes, each bounded
// by dicomnet.DefaultWriteTimeout, are held to it with the rest: the pipeline cancels the report at MaxReport, and a
// report cancelled ends at once, but for ARTIM's wait after its A-ABORT (within the pipeline's slack).
func (r *Reporter) MaxReport() time.Duration {
	answer := durOr(r.ResponseTimeout, DefaultResponseTimeout)
	d := durOr(r.DialTimeout, DefaultDialTimeout) + 3*answer + ARTIMTimeout
	if r.Server != nil {
		d += answer
	}
	if r.Peers.TLS() {
		d += answer
	}
	return d
}

// MinReport implements pipeline.CommitmentReporter: connecting and one answer (the A-ASSOCIATE-AC), the least by
// these deadlines that gives a PACS its chance; a delivery the pipeline gives less, and cuts before the PACS
// answered, counts no attempt.
func (r *Reporter) MinReport() time.Duration {
	return durOr(r.DialTimeout, DefaultDialTimeout) + durOr(r.ResponseTimeout, DefaultResponseTimeout)
}

// CanReport reports whether results for ae can be delivered once its association is gone.
func (r *Reporter) CanReport(ae string) bool {
	_, ok := r.Peers[ae]
	return ok
}

func (r *Reporter) log() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}

// Report implements pipeline.CommitmentReporter.
func (r *Reporter) Report(ctx context.Context, rep pipeline.CommitmentReport) (pipeline.CommitmentDelivery, error) {
	res := rep.Result
	ev := dicomnet.EventReport{
		SOPClassUID: dicomuid.StorageCommitment, SOPInstanceUID: dicomuid.StorageCommitmentInstance, EventTypeID: res.EventTypeID(),
		DataSet: func(ts string) ([]byte, error) { return commitment.AppendResult(nil, &res, ts) },
	}
	log := r.log().With("calling_ae", rep.CallingAE, "association", rep.AssociationID)
	if r.Server != nil && rep.AssociationID != "" {
		// Bounded like a response on our own association: a requestor that keeps its association open but
		// does not answer is then reported to as if it had left.
		sctx, cancel := context.WithTimeout(ctx, durOr(r.ResponseTimeout, DefaultResponseTimeout))
		st, err := r.Server.SendEventReport(sctx, rep.AssociationID, ev)
		cancel()
		switch {
		case err == nil && !st.IsFailure():
			return pipeline.CommitmentDelivery{SameAssociation: true}, nil
		case err == nil:
			return pipeline.CommitmentDelivery{}, fmt.Errorf("commitreport: the AE answered the report with %w", peerStatus{st})
		case errors.Is(err, dicomnet.ErrNoAssociation), errors.Is(err, dicomnet.ErrRoleNotHeld), errors.Is(err, dicomnet.ErrAssociationEnded),
			errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			log.Debug("commitreport: not on the requestor's association", "reason", err)
		default:
			return pipeline.CommitmentDelivery{}, fmt.Errorf("commitreport: report on the requestor's association: %w", err)
		}
	}
	peer, ok := r.Peers[rep.CallingAE]
	if !ok {
		return pipeline.CommitmentDelivery{}, fmt.Errorf("%w %s", ErrNoPeer, rep.CallingAE)
	}
	addr := peer.Addr
	cfg := dicomnet.ClientConfig{
		CallingAE: r.AETitle, CalledAE: rep.CallingAE, Dial: r.Dial,
		DialTimeout: durOr(r.DialTimeout, DefaultDialTimeout), ResponseTimeout: durOr(r.ResponseTimeout, DefaultResponseTimeout),
		ARTIMTimeout: ARTIMTimeout,
		Contexts: []dicomnet.ProposedContext{{AbstractSyntax: dicomuid.StorageCommitment,
			TransferSyntaxes: []string{dicomuid.ExplicitVRLittleEndian, dicomuid.ImplicitVRLittleEndian},
			Roles:            &dicomnet.Roles{SCP: true}}},
	}
	transport := "plain DICOM"
	if peer.TLS {
		dial, presented, err := r.tlsDial(ctx, rep.CallingAE, peer, cfg)
		if err != nil {
			if he, ok := errors.AsType[*HandshakeError](err); ok && r.HandshakeFailed != nil {
				r.HandshakeFailed(rep.CallingAE, he.Reason) // no configuration, our certificate not valid now: the PACS is not tried
			}
			return pipeline.CommitmentDelivery{}, fmt.Errorf("commitreport: report to %s at %s: %w", rep.CallingAE, peer, err)
		}
		cfg.Dial, transport = dial, "DICOM TLS "+presented
	}
	a, err := dicomnet.Dial(ctx, addr, cfg)
	if err != nil {
		if he, ok := errors.AsType[*HandshakeError](err); ok && r.HandshakeFailed != nil {
			r.HandshakeFailed(rep.CallingAE, he.Reason)
		}
		if errors.Is(err, dicomnet.ErrAborted) {
			// PACSs that check a peer's address against its AE title abort
			// rather than reject: ours is not the address the site sends to.
			return pipeline.CommitmentDelivery{}, fmt.Errorf("commitreport: associate with %s at %s: %w (the PACS may not accept our AE title %s from this address, or over %s)",
				rep.CallingAE, peer, err, r.AETitle, transport)
		}
		return pipeline.CommitmentDelivery{}, fmt.Errorf("commitreport: associate with %s at %s: %w", rep.CallingAE, peer, err)
	}
	st, err := a.SendEventReport(ctx, ev)
	if errors.Is(err, dicomnet.ErrRoleNotHeld) {
		// The association is sound, only of no use: leave it politely.
		return pipeline.CommitmentDelivery{}, errors.Join(fmt.Errorf("commitreport: %s turned down the SCP role: %w", rep.CallingAE, err), a.Release(ctx))
	}
	if err != nil {
		return pipeline.CommitmentDelivery{}, errors.Join(fmt.Errorf("commitreport: report to %s: %w", rep.CallingAE, err), a.Abort())
	}
	if rerr := a.Release(ctx); rerr != nil {
		log.Info("commitreport: release after the report", "err", rerr)
	}
	if st.IsFailure() {
		return pipeline.CommitmentDelivery{}, fmt.Errorf("commitreport: %s answered the report with %w", rep.CallingAE, peerStatus{st})
	}
	log.Info("commitreport: result delivered on a new association", "event_type", res.EventTypeID(), "tls", peer.TLS)
	return pipeline.CommitmentDelivery{}, nil
}

// peerStatus is a failure status a PACS answered a report with. The error is the undeliverable record's last
// error, which a compliance officer reads, and reaches logs (docs/operations/logging.md): it tells the status by
// its code and meaning, never the PACS's Error Comment, which is its own free text, of any length, naming what it
// likes (the report's UIDs, a patient's name): dimse.WithoutComments, the rule the pipeline keeps every last error
// by. The status in the chain, for errors.As, has no comment either.
type peerStatus struct{ st dimse.Status }

func (p peerStatus) Error() string { return dimse.WithoutComments(p.st.Error()) }

func (p peerStatus) Unwrap() error { return dimse.Status{Code: p.st.Code} }

// tlsDial returns the dialer of an association to the TLS peer of ae: TCP as cfg dials it, then the TLS
// handshake, bounded by cfg's ResponseTimeout (the wait for the peer's answer it is), with the Reporter's TLS
// configuration naming the peer's server name when it has one, else its host (a DNS name, or an IP address
// checked against the certificate's IP SANs).
// A failed handshake is a *HandshakeError, and so is the peer's alert before its first answer (alertConn). It
// also says what the association presents of ours (presented): our client certificate by its name, or none.
func (r *Reporter) tlsDial(ctx context.Context, ae string, peer Peer, cfg dicomnet.ClientConfig) (dial func(ctx context.Context, network, addr string) (net.Conn, error), presented string, err error) {
	if r.TLS == nil {
		return nil, "", ErrNoTLS
	}
	base, notValid, err := r.tlsConfig(ctx, ae)
	if errors.Is(err, tlstrust.ErrNotValidNow) {
		// No configuration to try the PACS with: the failure is one of ours.
		r.ownCertificateRefused(ae, nil, err)
		return nil, "", &HandshakeError{Reason: HandshakeOwnCertificateNotValid, Err: err}
	}
	if err != nil {
		return nil, "", fmt.Errorf("commitreport: TLS client configuration: %w", err)
	}
	leaf := tlstrust.ClientLeaf(base)
	if leaf != nil && notValid == nil {
		notValid = tlstrust.CheckValidity(leaf, time.Now())
	}
	if notValid != nil {
		// Every PACS that asks for it would refuse it: tlstrust.ClientConfig does not send it, failing the
		// handshake of a PACS that asks; one that asks for none takes the report.
		r.ownCertificateRefused(ae, leaf, notValid)
	} else {
		r.ownCertificateValid(ae)
	}
	host, _, err := net.SplitHostPort(peer.Addr)
	if err != nil {
		return nil, "", fmt.Errorf("commitreport: %w", err)
	}
	if peer.ServerName != "" {
		host = peer.ServerName
	}
	presented = "without a client certificate"
	if leaf != nil {
		// Go sends it only when the PACS asks for one (a CertificateRequest).
		presented = "offering our client certificate " + tlstrust.NameOf(leaf).String() + ", sent only if the PACS asked for one"
	}
	tcfg := base.Clone()
	tcfg.ServerName = host
	tcp := cfg.Dial
	if tcp == nil {
		tcp = (&net.Dialer{Timeout: cfg.DialTimeout}).DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := tcp(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		hctx, cancel := context.WithTimeout(ctx, cfg.ResponseTimeout)
		defer cancel()
		tc := tls.Client(nc, tcfg)
		if err := tc.HandshakeContext(hctx); err != nil {
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() && ctx.Err() == nil {
				err = fmt.Errorf("%w after %s: %w", dicomnet.ErrHandshakeTimeout, cfg.ResponseTimeout, err)
			}
			reason := dicomnet.HandshakeFailureReason(err)
			if errors.Is(err, tlstrust.ErrNotValidNow) {
				// The PACS asked for our certificate, not valid now (tlstrust.ClientConfig's check).
				reason = HandshakeOwnCertificateNotValid
			}
			return nil, errors.Join(&HandshakeError{Reason: reason, Err: err}, nc.Close())
		}
		return &alertConn{Conn: tc}, nil
	}, presented, nil
}

// alertConn is a TLS association's connection whose reads, until one returns data, turn the peer's alert into a
// *HandshakeError. Under TLS 1.3 our handshake ends before the peer has checked our certificate: a PACS that
// refuses it ("certificate required", "bad certificate", "unknown certificate authority") says so on the first
// read of the association, the wait for its A-ASSOCIATE-AC, and that is a failed handshake as under TLS 1.2.
type alertConn struct {
	*tls.Conn
	answered atomic.Bool // a read returned data: the peer took our certificate
}

func (c *alertConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.answered.Store(true)
	}
	if err != nil && !c.answered.Load() && dicomnet.HandshakeFailureReason(err) == dicomnet.HandshakePeerAlert {
		return n, &HandshakeError{Reason: dicomnet.HandshakePeerAlert, Err: err}
	}
	return n, err
}

// ownCertificateRefused logs the refusal of our client certificate leaf for ae (OwnCertificateNotValidLog) once,
// until the certificate changes: the same certificate refused where it was read (its error naming the file or
// secret) or by the Reporter's check (a certificate read while valid) is one refusal. Without a certificate (TLS
// made no configuration) the refusal's text stands for it.
func (r *Reporter) ownCertificateRefused(ae string, leaf *x509.Certificate, err error) {
	key := err.Error()
	if leaf != nil {
		key = string(leaf.Raw)
	}
	r.tlsMu.Lock()
	defer r.tlsMu.Unlock()
	if r.ownCertErr == nil {
		r.ownCertErr = map[string]string{}
	}
	if r.ownCertErr[ae] == key {
		return
	}
	r.ownCertErr[ae] = key
	r.log().Error(OwnCertificateNotValidLog, "called_ae", ae, "err", err)
}

// ownCertificateValid forgets the refusal of our client certificate for ae logged last: the next one, even of the
// same certificate (not yet valid at start, then expired), is logged again.
func (r *Reporter) ownCertificateValid(ae string) {
	r.tlsMu.Lock()
	defer r.tlsMu.Unlock()
	delete(r.ownCertErr, ae)
}

// tlsConfig calls r.TLS for the peer of AE title ae; when that fails after it once succeeded for ae, it
// returns the configuration of that AE's last success, the failure logged once (until TLS succeeds again): the rule
// of tlstrust.LastGood, which also decides a configuration TLS returns with our certificate refused for its dates
// alone: used, the refusal returned as notValid, unless the last success's certificate is valid now: that one
// stays in use, as for any renewal that does not load.
func (r *Reporter) tlsConfig(ctx context.Context, ae string) (cfg *tls.Config, notValid, err error) {
	r.tlsMu.Lock()
	if r.tlsLast == nil {
		r.tlsLast = map[string]*tlstrust.LastGood{}
	}
	last := r.tlsLast[ae]
	if last == nil {
		last = &tlstrust.LastGood{}
		r.tlsLast[ae] = last
	}
	r.tlsMu.Unlock()
	cfg, err, notReloaded := last.Take(r.TLS(ctx, ae))
	if notReloaded != nil {
		r.log().Warn(TLSNotReloadedLog, "err", notReloaded)
	}
	switch {
	case cfg != nil && errors.Is(err, tlstrust.ErrNotValidNow):
		return cfg, err, nil
	case err != nil:
		return nil, nil, err
	}
	return cfg, nil, nil
}

func durOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
