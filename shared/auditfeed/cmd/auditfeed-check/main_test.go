package main

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
)

// TestRun: the command takes what the auditfeed function takes and
// refuses, with its error, what stops the function at start. A client
// certificate only expired or not yet valid does not stop it: taken, with a
// warning naming its dates.
func TestRun(t *testing.T) {
	ca := testpki.NewCA(t, "Collector CA")
	weak := testpki.NewCAWith(t, "Weak CA", testpki.Options{RSA: true, RSABits: 1024})
	client := ca.Client(t, testpki.Options{})
	weakClient := weak.Client(t, testpki.Options{RSA: true, RSABits: 1024})
	dir := t.TempDir()
	file := func(name string, b ...[]byte) string {
		p := filepath.Join(dir, name)
		testpki.WriteFile(t, p, bytes.Join(b, nil))
		return p
	}
	good := file("ca.pem", ca.PEM)
	expired := ca.Client(t, testpki.Expired("old"))
	notYet := ca.Client(t, testpki.NotYetValid("early"))
	for _, tc := range []struct {
		name    string
		args    []string
		stdin   []byte
		wantErr string // "" for taken
		ca      bool   // the error is the collector CA's (auditfeed.ErrCA)
		warns   string // taken with a warning saying this
	}{
		{name: "a CA", args: []string{good}},
		{name: "two CAs from standard input", args: []string{"-"}, stdin: append(append([]byte(nil), ca.PEM...), ca.PEM...)},
		{name: "text after the certificate", args: []string{file("trailing.pem", ca.PEM, []byte("exported by the SIEM team\n"))}, wantErr: "text after the last PEM block", ca: true},
		{name: "a CA of a weak key", args: []string{file("weak.pem", weak.PEM)}, wantErr: "certificate 1", ca: true},
		{name: "nothing", args: []string{"-"}, stdin: []byte("\n"), wantErr: "no certificate", ca: true},
		{name: "a key in the CA secret", args: []string{file("key.pem", ca.PEM, client.KeyPEM)}, wantErr: `a "PRIVATE KEY" block`, ca: true},
		{name: "a client certificate", args: []string{"-client", file("client.pem", client.CertPEM, client.KeyPEM), good}},
		{name: "a client certificate of a weak key", args: []string{"-client", file("weakclient.pem", weakClient.CertPEM, weakClient.KeyPEM), good}, wantErr: "client certificate"},
		{name: "a client certificate without its key", args: []string{"-client", file("nokey.pem", client.CertPEM), good}, wantErr: "client certificate"},
		{name: "no such file", args: []string{filepath.Join(dir, "none.pem")}, wantErr: "no such file"},
		{name: "an expired client certificate", args: []string{"-client", file("expired.pem", expired.CertPEM, expired.KeyPEM), good}, warns: testpki.ExpiredDates},
		{name: "a client certificate not yet valid", args: []string{"-client", file("early.pem", notYet.CertPEM, notYet.KeyPEM), good}, warns: `"CN=early,`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(tc.args, bytes.NewReader(tc.stdin), &out)
			switch {
			case tc.wantErr == "" && (err != nil || !strings.Contains(out.String(), "ok: the auditfeed function takes it")):
				t.Errorf("%v, %q; want it taken", err, out.String())
			case tc.wantErr == "" && tc.warns == "" && !strings.HasPrefix(out.String(), "ok"):
				t.Errorf("%q; want it taken without a warning", out.String())
			case tc.warns != "" && (!strings.HasPrefix(out.String(), "warning: ") || !strings.Contains(out.String(), tc.warns) || strings.Contains(out.String(), "PRIVATE KEY")):
				t.Errorf("%q; want a warning saying %q", out.String(), tc.warns)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || errors.Is(err, auditfeed.ErrCA) != tc.ca):
				t.Errorf("error %v; want one saying %q (the CA's: %v)", err, tc.wantErr, tc.ca)
			case tc.wantErr != "" && out.Len() != 0:
				t.Errorf("printed %q on a refusal", out.String())
			}
		})
	}
}
