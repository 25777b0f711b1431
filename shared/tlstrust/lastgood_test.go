package tlstrust_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// TestLastGood: the one rule of the clients that read their TLS configuration again for each connection (the
// Storage Commitment reporter, scp-task's audit feed). A read that fails keeps the last good configuration, the
// failure told once; a configuration whose client certificate is refused for its dates alone is taken when the one
// kept presents none valid now (the same certificate read again, out of date at start or since: no renewal failed,
// nothing told), and otherwise is a renewal that did not load.
func TestLastGood(t *testing.T) {
	ca := testpki.NewCA(t, "CA")
	read := func(o testpki.Options) func() (*tls.Config, error) {
		c := ca.Client(t, o)
		cert, err := tlstrust.ClientCertificate(c.CertPEM, c.KeyPEM)
		return func() (*tls.Config, error) { return tlstrust.ClientConfig("", ca.Pool(), &cert), err }
	}
	valid, renewed := read(testpki.Options{CommonName: "valid"}), read(testpki.Options{CommonName: "renewed"})
	expired, old := read(testpki.Expired("expired")), read(testpki.Expired("old"))
	noCert := func() (*tls.Config, error) { return tlstrust.ClientConfig("", ca.Pool(), nil), nil }
	halfWritten := func() (*tls.Config, error) { return nil, errors.New("no PEM block in it") }
	type take struct {
		read      func() (*tls.Config, error)
		use       string // the common name of the configuration to use; "-" none, "none" one without a certificate
		notValid  bool   // useErr is the refusal of its dates, the configuration used all the same
		failed    bool   // useErr is the read's failure, nothing to use
		notLoaded bool   // notReloaded is told
	}
	for _, tc := range []struct {
		name  string
		takes []take
	}{
		{"valid, then renewals that do not load", []take{
			{read: valid, use: "valid"},
			{read: halfWritten, use: "valid", notLoaded: true},
			{read: halfWritten, use: "valid"},
			{read: old, use: "valid", notLoaded: true},
			{read: old, use: "valid"},
			{read: renewed, use: "renewed"},
		}},
		{"out of date from the start, read again unchanged", []take{
			{read: expired, use: "expired", notValid: true},
			{read: expired, use: "expired", notValid: true},
			{read: halfWritten, use: "expired", notLoaded: true},
			{read: old, use: "old", notValid: true},
			{read: renewed, use: "renewed"},
		}},
		{"none kept", []take{
			{read: halfWritten, use: "-", failed: true},
			{read: noCert, use: "none"},
			{read: expired, use: "none", notLoaded: true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var g tlstrust.LastGood
			for i, tk := range tc.takes {
				use, useErr, notReloaded := g.Take(tk.read())
				got := "-"
				if use != nil {
					got = "none"
					if len(use.Certificates) > 0 {
						got = use.Certificates[0].Leaf.Subject.CommonName
					}
				}
				notValid := useErr != nil && errors.Is(useErr, tlstrust.ErrNotValidNow) && use != nil
				failed := useErr != nil && use == nil
				if got != tk.use || notValid != tk.notValid || failed != tk.failed || (notReloaded != nil) != tk.notLoaded {
					t.Errorf("take %d: use %s, err %v, notReloaded %v; want %s, %s", i+1, got, useErr, notReloaded, tk.use, fmt.Sprintf("not valid %v, failed %v, told %v", tk.notValid, tk.failed, tk.notLoaded))
				}
			}
		})
	}
}
