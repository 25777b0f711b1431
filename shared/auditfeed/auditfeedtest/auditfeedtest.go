// Package auditfeedtest runs a real syslog TLS collector for the audit
// feed's tests: Debian's rsyslog with its GnuTLS network stream driver,
// started by the test on a loopback port with a throwaway PKI, writing every
// message it receives to a file the test reads back.
package auditfeedtest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// PKI is a test CA with a server certificate for 127.0.0.1 and localhost
// and a client certificate, as PEM files in Dir.
type PKI struct {
	Dir                   string
	CA                    string // CA certificate
	ServerCert, ServerKey string
	ClientCert, ClientKey string
	OtherCA               string // a CA that signed none of these
	caCert                *x509.Certificate
	caKey                 *ecdsa.PrivateKey
}

// NewPKI writes a fresh PKI into a temporary directory.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	p := &PKI{Dir: t.TempDir()}
	p.caCert, p.caKey, p.CA = p.ca(t, "ca.pem", "dicom-ingest test CA")
	_, _, p.OtherCA = p.ca(t, "other-ca.pem", "some other CA")
	p.ServerCert, p.ServerKey = p.leaf(t, "server", "syslog.test", true)
	p.ClientCert, p.ClientKey = p.leaf(t, "client", "dicom-ingest audit feed", false)
	return p
}

func (p *PKI) ca(t testing.TB, file, cn string) (*x509.Certificate, *ecdsa.PrivateKey, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(p.Dir, file)
	writePEM(t, path, "CERTIFICATE", der)
	return cert, key, path
}

func (p *PKI) leaf(t testing.TB, name, cn string, server bool) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost", cn}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(p.Dir, name+".pem"), filepath.Join(p.Dir, name+".key")
	writePEM(t, certPath, "CERTIFICATE", der)
	writePEM(t, keyPath, "PRIVATE KEY", kder)
	return certPath, keyPath
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Read returns a PEM file's bytes.
func Read(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RequireRsyslog returns rsyslogd's path, checking the GnuTLS driver too;
// without them the test skips on a developer machine and fails under CI
// (testenv).
func RequireRsyslog(t testing.TB) string {
	t.Helper()
	bin := "/usr/sbin/rsyslogd" // outside a non-root user's PATH on Debian
	if _, err := os.Stat(bin); err != nil {
		bin = testenv.LookPath(t, "rsyslogd")
	}
	testenv.RequireFile(t, "/usr/lib/*/rsyslog/lmnsd_gtls.so")
	return bin
}

// Options for StartRsyslog.
type Options struct {
	PKI  *PKI
	Addr string // 127.0.0.1:port to listen on; "" picks a free port
	// RequireClientCert makes the collector ask for a client certificate
	// chaining to the PKI's CA (mutual TLS).
	RequireClientCert bool
	// Out is the file received messages go to; "" is one in a temporary
	// directory. Reusing it across restarts keeps what came before.
	Out string
}

// Rsyslog is a running collector.
type Rsyslog struct {
	Addr string
	Out  string
	cmd  *exec.Cmd
	done chan struct{}
	logs *testenv.LogBuffer // rsyslogd's output
}

// StartRsyslog starts rsyslogd in the foreground and waits until it
// listens. It is stopped when the test ends (or by Stop).
func StartRsyslog(t testing.TB, o Options) *Rsyslog {
	t.Helper()
	bin := RequireRsyslog(t)
	dir := t.TempDir()
	if o.Addr == "" {
		o.Addr = testenv.FreeAddr(t)
	}
	if o.Out == "" {
		o.Out = filepath.Join(dir, "received.log")
	}
	_, port, err := net.SplitHostPort(o.Addr)
	if err != nil {
		t.Fatal(err)
	}
	auth := "anon"
	if o.RequireClientCert {
		auth = "x509/certvalid"
	}
	conf := fmt.Sprintf(`global(workDirectory=%q maxMessageSize="256k"
  defaultNetstreamDriver="gtls" defaultNetstreamDriverCAFile=%q
  defaultNetstreamDriverCertFile=%q defaultNetstreamDriverKeyFile=%q)
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode=%q)
input(type="imtcp" address="127.0.0.1" port=%q name="audit" ruleset="audit")
template(name="raw" type="string" string="%%rawmsg%%\n")
ruleset(name="audit") {
  action(type="omfile" file=%q template="raw")
}
`, dir, o.PKI.CA, o.PKI.ServerCert, o.PKI.ServerKey, auth, port, o.Out)
	confPath := filepath.Join(dir, "rsyslog.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &Rsyslog{Addr: o.Addr, Out: o.Out, done: make(chan struct{}), logs: &testenv.LogBuffer{}}
	r.cmd = exec.Command(bin, "-n", "-f", confPath, "-i", filepath.Join(dir, "rsyslogd.pid"))
	r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start rsyslogd: %v", err)
	}
	go func() { _ = r.cmd.Wait(); close(r.done) }()
	t.Cleanup(r.Stop)
	testenv.EventuallySawWithin(t, 15*time.Second, "rsyslogd listening on "+o.Addr, func() (bool, string) {
		if c, err := net.DialTimeout("tcp", o.Addr, 200*time.Millisecond); err == nil {
			_ = c.Close()
			return true, ""
		}
		select {
		case <-r.done:
			t.Fatalf("rsyslogd exited before it listened on %s:\n%s", o.Addr, r.logs)
		default:
		}
		return false, r.logs.String()
	})
	return r
}

// Stop stops the collector (SIGTERM, then SIGKILL) and waits for it.
func (r *Rsyslog) Stop() {
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

// Received is one message the collector wrote.
type Received struct {
	Raw      string // the syslog message as received
	PRI      int
	Hostname string
	AppName  string
	MsgID    string
	ID       string // the stable message id from the structured data
	XML      []byte // the audit message, without the BOM
}

var line = regexp.MustCompile(`^<(\d+)>1 (\S+) (\S+) (\S+) (\S+) (\S+) \[dicom-ingest@32473 id="((?:[^"\\\]]|\\.)*)"\] \x{FEFF}(.*)$`)

// Messages parses everything received so far; a line that is not an audit
// feed message fails t.
func (r *Rsyslog) Messages(t testing.TB) []Received {
	t.Helper()
	b, err := os.ReadFile(r.Out)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	// rsyslog may be writing the last line: only whole lines are
	// messages, the rest is read on the next call.
	b = b[:bytes.LastIndexByte(b, '\n')+1]
	var out []Received
	for _, l := range strings.SplitAfter(string(b), "\n") {
		l = strings.TrimSuffix(l, "\n")
		if l == "" {
			continue
		}
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("collector received a line that is not an audit feed message: %q", l)
		}
		pri, _ := strconv.Atoi(m[1])
		id := strings.NewReplacer(`\\`, `\`, `\"`, `"`, `\]`, `]`).Replace(m[7])
		out = append(out, Received{Raw: m[0], PRI: pri, Hostname: m[3], AppName: m[4], MsgID: m[6], ID: id, XML: []byte(m[8])})
	}
	return out
}

// WaitFor polls the received messages until done says so, failing t after
// timeout; it returns the messages done accepted.
func (r *Rsyslog) WaitFor(t testing.TB, timeout time.Duration, done func([]Received) bool) []Received {
	t.Helper()
	var msgs []Received
	testenv.EventuallySawWithin(t, timeout, "the messages the test waits for at the collector", func() (bool, string) {
		msgs = r.Messages(t)
		ids := make([]string, len(msgs))
		for i, m := range msgs {
			ids[i] = m.ID
		}
		return done(msgs), fmt.Sprintf("%d messages: %v\nrsyslogd:\n%s", len(msgs), ids, r.logs)
	})
	return msgs
}

// Unique returns the messages by stable id (duplicates are allowed by
// at-least-once delivery and dropped here) and how many were duplicates.
func Unique(msgs []Received) (map[string]Received, int) {
	out := map[string]Received{}
	dups := 0
	for _, m := range msgs {
		if _, ok := out[m.ID]; ok {
			dups++
			continue
		}
		out[m.ID] = m
	}
	return out, dups
}
