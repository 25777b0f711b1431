package lambdaio

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/dicom-ingest/dicom-ingest/functions/internal/lambdaio/lambdaiotest"
	"github.com/dicom-ingest/dicom-ingest/shared/commitreport"
	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog"
	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog/jsonlogtest"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// TestClientSecretReadBackoff: a client certificate's secret that cannot be read (Secrets Manager out of reach, a
// wrong ARN) is not read again by every report: its failure is kept for a backoff window (ClientSecretRetryFirst,
// doubling to ClientSecretRetryMax, with jitter), logged once per window (ClientSecretUnreadLog), and returned at
// once, without a call, until the window ends; a read that succeeds ends the backoff. Each secret has its own.
func TestClientSecretReadBackoff(t *testing.T) {
	caA, caB := testpki.NewCA(t, "PACS A CA"), testpki.NewCA(t, "PACS B CA")
	certA := clientSecret(t, caA.Client(t, testpki.Options{CommonName: "ingest-a"}))
	sm := &countingSecrets{lambdaiotest.UnansweredSecrets{Values: map[string]string{arnB: clientSecret(t, caB.Client(t, testpki.Options{CommonName: "ingest-b"}))}}}
	var logs bytes.Buffer
	p, err := NewPeerCredentials(commitreport.TLSPeers{"A": {CA: string(caA.PEM), ClientSecretARN: arnA}, "B": {CA: string(caB.PEM), ClientSecretARN: arnB}}, sm)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	p.Now, p.Logger = func() time.Time { return now }, LoggerTo(&logs, "commitment", "test")
	logged := func() []map[string]any {
		return jsonlogtest.Counted(t, jsonlog.MessageFilter(ClientSecretUnreadLog), logs.Bytes())
	}
	jitter := 1 + clientSecretRetryJitter
	steps := []struct {
		name    string
		advance time.Duration
		before  func()
		ae      string
		ok      bool
		reads   int // of A's secret and B's, all told
		logged  int
	}{
		{"first failure: read, logged", 0, nil, "A", false, 1, 1},
		{"again at once: not read, not logged", 0, nil, "A", false, 1, 1},
		{"again within the shortest first window", time.Duration(float64(ClientSecretRetryFirst) * (1 - clientSecretRetryJitter) * 0.99), nil, "A", false, 1, 1},
		{"B's secret its own", 0, nil, "B", true, 2, 1},
		{"after the longest first window: read again, logged again", time.Duration(float64(ClientSecretRetryFirst) * jitter), nil, "A", false, 3, 2},
		{"within the shortest second window", time.Duration(float64(2*ClientSecretRetryFirst) * (1 - clientSecretRetryJitter) * 0.99), nil, "A", false, 3, 2},
		{"restored, after the longest window: read", time.Duration(float64(ClientSecretRetryMax) * jitter), func() { sm.Values[arnA] = certA }, "A", true, 4, 2},
		{"failing again after a success: read at once, the first window again", ClientCredentialMaxAge, func() { delete(sm.Values, arnA) }, "A", false, 5, 3},
		{"after the longest first window", time.Duration(float64(ClientSecretRetryFirst) * jitter), nil, "A", false, 6, 4},
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		if s.before != nil {
			s.before()
		}
		_, err := p.Config(context.Background(), s.ae)
		if (err == nil) != s.ok || sm.reads() != s.reads || len(logged()) != s.logged {
			t.Fatalf("%s: Config(%s) = %v after %d reads, %d lines logged; want ok %v after %d reads, %d logged", s.name, s.ae, err, sm.reads(), len(logged()), s.ok, s.reads, s.logged)
		}
		if err != nil && (!errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "client certificate of A")) {
			t.Errorf("%s: %v, want the read's own failure", s.name, err)
		}
	}
	for _, l := range logged() {
		if l["called_ae"] != "A" || l["secret"] != arnA || l["retry_in"] == nil || !strings.Contains(fmt.Sprint(l["err"]), "deadline exceeded") {
			t.Errorf("logged %v, want the AE, the secret's ARN, the wait and the failure", l)
		}
	}
	if strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Error("a key in the log")
	}
}

// TestClientSecretReadBackoffBounds: a window is never longer than ClientSecretRetryMax, its jitter included (the
// docs promise a fixed secret is read within it), however many reads failed before; reports that come together
// during a window share its one read (the state is guarded: run with -race); and a read that failed because the
// report's own context ended (the invocation's deadline) says nothing of the secret, so it starts no window.
func TestClientSecretReadBackoffBounds(t *testing.T) {
	caA := testpki.NewCA(t, "PACS A CA")
	certA := clientSecret(t, caA.Client(t, testpki.Options{CommonName: "ingest-a"}))
	newCreds := func(t *testing.T) (*PeerCredentials, *countingSecrets, *time.Time) {
		sm := &countingSecrets{lambdaiotest.UnansweredSecrets{Values: map[string]string{}}}
		p, err := NewPeerCredentials(commitreport.TLSPeers{"A": {CA: string(caA.PEM), ClientSecretARN: arnA}}, sm)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		p.Now = func() time.Time { return now }
		return p, sm, &now
	}
	t.Run("no window past the longest", func(t *testing.T) {
		p, sm, now := newCreds(t)
		for i := range 40 { // past the doubling: each window then drawn around ClientSecretRetryMax
			reads := sm.reads()
			if _, err := p.Config(context.Background(), "A"); err == nil || sm.reads() != reads+1 {
				t.Fatalf("failure %d, after ClientSecretRetryMax: %v, %d reads (was %d), want the secret read again", i+1, err, sm.reads(), reads)
			}
			*now = now.Add(ClientSecretRetryMax)
		}
	})
	t.Run("reports together share the window's read", func(t *testing.T) {
		p, sm, _ := newCreds(t)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				if _, err := p.Config(context.Background(), "A"); err == nil {
					t.Error("Config = nil, want the read's failure")
				}
			})
		}
		wg.Wait()
		if sm.reads() != 1 {
			t.Errorf("%d reads, want 1", sm.reads())
		}
	})
	t.Run("the report's own context ended", func(t *testing.T) {
		p, sm, _ := newCreds(t)
		ended, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := p.Config(ended, "A"); err == nil {
			t.Fatal("Config with its context ended = nil, want its failure")
		}
		sm.Values[arnA] = certA
		if _, err := p.Config(context.Background(), "A"); err != nil || sm.reads() != 2 {
			t.Errorf("the next report: %v after %d reads, want the secret read (no window)", err, sm.reads())
		}
	})
}

// blockedSecrets is a Secrets Manager whose read of one secret (block) waits until released (or its context ends),
// the others answered as countingSecrets answers them: a read in flight, held.
type blockedSecrets struct {
	countingSecrets
	block            string
	started, release chan struct{}
	ended            atomic.Bool // the blocked read returned
}

func (s *blockedSecrets) GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error) {
	if in.SecretId != nil && *in.SecretId == s.block {
		close(s.started) // a second read of it while the first is held panics: one read in flight per secret
		select {
		case <-s.release:
		case <-ctx.Done():
		}
		defer s.ended.Store(true)
	}
	return s.countingSecrets.GetSecretValue(ctx, in, opts...)
}

// TestClientSecretReadHoldsNoOtherAE: a secret's read in flight (up to KeyReadTimeout) holds only the reports of
// the AEs that use it: another AE's certificate, read before, is given while it lasts; reports of the same AE share
// the one read, each waiting no longer than its own context (run with -race).
func TestClientSecretReadHoldsNoOtherAE(t *testing.T) {
	caA, caB := testpki.NewCA(t, "PACS A CA"), testpki.NewCA(t, "PACS B CA")
	sm := &blockedSecrets{
		countingSecrets: countingSecrets{lambdaiotest.UnansweredSecrets{Values: map[string]string{
			arnA: clientSecret(t, caA.Client(t, testpki.Options{CommonName: "ingest-a"})),
			arnB: clientSecret(t, caB.Client(t, testpki.Options{CommonName: "ingest-b"})),
		}}},
		block: arnA, started: make(chan struct{}), release: make(chan struct{}),
	}
	p, err := NewPeerCredentials(commitreport.TLSPeers{"A": {CA: string(caA.PEM), ClientSecretARN: arnA}, "B": {CA: string(caB.PEM), ClientSecretARN: arnB}}, sm)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Config(context.Background(), "B"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Go(func() {
			_, err := p.Config(context.Background(), "A")
			errs <- err
		})
	}
	<-sm.started
	cfg, err := p.Config(context.Background(), "B")
	if err != nil || cfg.Certificates[0].Leaf.Subject.CommonName != "ingest-b" {
		t.Fatalf("B's kept certificate while A's secret is read: %v", err)
	}
	if sm.ended.Load() {
		t.Error("B's certificate given only once A's read had ended: B's report waited on A's secret")
	}
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Config(ended, "A"); !errors.Is(err, context.Canceled) || sm.ended.Load() {
		t.Errorf("a report of A whose context ends while A's secret is read: %v (the read ended: %v), want its own end, at once", err, sm.ended.Load())
	}
	close(sm.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("A's report: %v", err)
		}
	}
	if sm.reads() != 2 {
		t.Errorf("%d reads, want 2 (B's, then A's once)", sm.reads())
	}
}

// onceSecrets is a Secrets Manager whose first read of a secret does something else (panics, or answers the value
// it found when called only once released), the later ones answered as countingSecrets answers them.
type onceSecrets struct {
	countingSecrets
	first            atomic.Bool
	panics           bool
	started, release chan struct{}
}

func (s *onceSecrets) GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error) {
	if s.first.Swap(true) {
		return s.countingSecrets.GetSecretValue(ctx, in, opts...)
	}
	if s.panics {
		panic("the SDK panicked")
	}
	out, err := s.countingSecrets.GetSecretValue(ctx, in, opts...) // the value before the rotation
	close(s.started)
	<-s.release
	return out, err
}

// TestClientSecretReadEndsEvenIfItPanics: a read that panics (recovered by the AE's goroutine) is not left in
// flight: its report gets the panic, the next report reads the secret again rather than wait for the read until its
// context ends.
func TestClientSecretReadEndsEvenIfItPanics(t *testing.T) {
	ca := testpki.NewCA(t, "PACS CA")
	sm := &onceSecrets{panics: true, countingSecrets: countingSecrets{lambdaiotest.UnansweredSecrets{Values: map[string]string{
		arnA: clientSecret(t, ca.Client(t, testpki.Options{CommonName: "ingest-a"}))}}}}
	p, err := NewPeerCredentials(commitreport.TLSPeers{"A": {CA: string(ca.PEM), ClientSecretARN: arnA}}, sm)
	if err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Error("the read's panic was not passed on")
			}
		}()
		_, err := p.Config(context.Background(), "A")
		t.Errorf("Config returned %v, want the read's panic", err)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cfg, err := p.Config(ctx, "A")
	if err != nil || len(cfg.Certificates) != 1 || sm.reads() != 1 {
		t.Fatalf("the next report: %v after %d answered reads, want the secret read again", err, sm.reads())
	}
}

// TestClientSecretForgetDuringARead: a failed handshake (Forget) while the secret's read is in flight drops what
// that read finds too (it may be the certificate before the rotation): the read's own report gets it, the next use
// reads the secret again and presents the rotated one.
func TestClientSecretForgetDuringARead(t *testing.T) {
	ca := testpki.NewCA(t, "PACS CA")
	sm := &onceSecrets{started: make(chan struct{}), release: make(chan struct{}), countingSecrets: countingSecrets{lambdaiotest.UnansweredSecrets{Values: map[string]string{
		arnA: clientSecret(t, ca.Client(t, testpki.Options{CommonName: "old"}))}}}}
	p, err := NewPeerCredentials(commitreport.TLSPeers{"A": {CA: string(ca.PEM), ClientSecretARN: arnA}}, sm)
	if err != nil {
		t.Fatal(err)
	}
	presented := func(cfg *tls.Config, err error) string {
		t.Helper()
		if err != nil || len(cfg.Certificates) != 1 {
			t.Fatalf("Config = %v", err)
		}
		return cfg.Certificates[0].Leaf.Subject.CommonName
	}
	first := make(chan string)
	go func() {
		cfg, err := p.Config(context.Background(), "A")
		if err != nil {
			close(first)
			return
		}
		first <- cfg.Certificates[0].Leaf.Subject.CommonName
	}()
	<-sm.started
	sm.Values[arnA] = clientSecret(t, ca.Client(t, testpki.Options{CommonName: "new"}))
	p.Forget("A")
	close(sm.release)
	if got := <-first; got != "old" {
		t.Errorf("the read's own report presented %q, want %q", got, "old")
	}
	if got := presented(p.Config(context.Background(), "A")); got != "new" {
		t.Errorf("the next use presented %q, want %q (the secret read again)", got, "new")
	}
}

// TestClientSecretUnusableBackoff: a secret that reads but holds no usable certificate (not the JSON, bad PEM, a key
// that is not the certificate's, a certificate expired) was read again by every report, each an unbounded call to
// Secrets Manager, no backoff: it is held to the backoff of a secret not read (one rule): its failure kept for the
// window, logged once per window (ClientSecretUnusableLog; an expired one is the Reporter's
// OwnCertificateNotValidLog, once), the secret read again when the window ends, and a fixed one taken then. An
// expired certificate comes with its refusal through the window, so that a PACS that asks for none still gets
// its reports.
func TestClientSecretUnusableBackoff(t *testing.T) {
	caA := testpki.NewCA(t, "PACS A CA")
	good, other := caA.Client(t, testpki.Options{CommonName: "ingest-a"}), caA.Client(t, testpki.Options{CommonName: "other"})
	for _, tt := range []struct {
		name, value string
		notValid    bool
		logged      bool
	}{
		{"not JSON", "-----BEGIN CERTIFICATE-----", false, true},
		{"bad PEM", `{"certificate":"not pem","privateKey":"not pem"}`, false, true},
		{"key of another", `{"certificate":` + strconvQuote(string(good.CertPEM)) + `,"privateKey":` + strconvQuote(string(other.KeyPEM)) + `}`, false, true},
		{"expired", clientSecret(t, caA.Client(t, testpki.Expired("ingest-a"))), true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sm := &countingSecrets{lambdaiotest.UnansweredSecrets{Values: map[string]string{arnA: tt.value}}}
			var logs bytes.Buffer
			p, err := NewPeerCredentials(commitreport.TLSPeers{"A": {CA: string(caA.PEM), ClientSecretARN: arnA}}, sm)
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			p.Now, p.Logger = func() time.Time { return now }, LoggerTo(&logs, "commitment", "test")
			jitter := 1 + clientSecretRetryJitter
			for _, s := range []struct {
				name    string
				advance time.Duration
				fix     bool
				ok      bool
				reads   int
				logged  int
			}{
				{"first report: read", 0, false, false, 1, 1},
				{"reports within the window: not read", 0, false, false, 1, 1},
				{"and again", time.Duration(float64(ClientSecretRetryFirst) * (1 - clientSecretRetryJitter) * 0.99), false, false, 1, 1},
				{"after the window: read again, logged again", time.Duration(float64(ClientSecretRetryFirst) * jitter), false, false, 2, 2},
				{"fixed, within the second window: not read yet", 0, true, false, 2, 2},
				{"fixed, after the longest window: taken", time.Duration(float64(ClientSecretRetryMax) * jitter), false, true, 3, 2},
			} {
				now = now.Add(s.advance)
				if s.fix {
					sm.Values[arnA] = clientSecret(t, good)
				}
				cfg, err := p.Config(context.Background(), "A")
				want := 0
				if tt.logged {
					want = s.logged
				}
				n := len(jsonlogtest.Counted(t, jsonlog.MessageFilter(ClientSecretUnusableLog), logs.Bytes()))
				if (err == nil) != s.ok || sm.reads() != s.reads || n != want {
					t.Fatalf("%s: Config = %v after %d reads, %d lines logged; want ok %v after %d reads, %d logged", s.name, err, sm.reads(), n, s.ok, s.reads, want)
				}
				if err != nil && (!strings.Contains(err.Error(), "client certificate of A") || !strings.Contains(err.Error(), arnA)) {
					t.Errorf("%s: %v, want it to name the AE and the secret", s.name, err)
				}
				if err != nil && tt.notValid && (!errors.Is(err, tlstrust.ErrNotValidNow) || cfg == nil) {
					t.Errorf("%s: %v with configuration %v, want the refusal for its dates with the configuration", s.name, err, cfg)
				}
			}
			if strings.Contains(logs.String(), "PRIVATE KEY") {
				t.Error("a key in the log")
			}
		})
	}
}
