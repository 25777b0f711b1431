package main

import (
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/config"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
)

// startErr is what scp-task says when it cannot start with args and env:
// Load's error, else startTLS's (which reads the TLS files), else nil.
func startErr(t *testing.T, args []string, env map[string]string) error {
	t.Helper()
	cfg, err := config.Load(args, envOf(env), io.Discard)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err = startTLS(ctx, cfg, &dicomnet.Server{}, slog.New(slog.DiscardHandler), nil)
	return err
}

// TestSecretSettingsNeverQuoted: whatever a secret setting (a private
// key's: config.Setting.Secret) is given, the error scp-task stops with
// holds none of its bytes: not the value (a key's text given where its
// file's path was wanted, bare or armoured), not the file's. Every secret
// setting is tried, read through config.ReadFile, the one reader that
// knows them; a new one must say here what it needs beside it.
func TestSecretSettingsNeverQuoted(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "CA")
	server := ca.Server(t, testpki.Options{}).WriteFiles(t, dir, "server")
	client := ca.Client(t, testpki.Options{CommonName: "scp"}).WriteFiles(t, dir, "client")
	caFile := filepath.Join(dir, "ca.pem")
	testpki.WriteFile(t, caFile, ca.PEM)
	// What each secret setting is read with.
	beside := map[string]map[string]string{
		"tls-key":          {"SCP_TLS_LISTEN": "127.0.0.1:0", "SCP_TLS_CERT": server.Cert},
		"audit-syslog-key": {"SCP_AUDIT_SYSLOG": "tls://collector.example", "SCP_AUDIT_SYSLOG_CA": caFile, "SCP_AUDIT_SYSLOG_CERT": client.Cert},
		"commitment-tls-key": {"SCP_COMMITMENT_PEERS": "PACS=tls://127.0.0.1:2762", "SCP_COMMITMENT_TLS_CA": caFile,
			"SCP_COMMITMENT_TLS_CERT": client.Cert},
	}
	const secret = "s3cretKeyMaterial"
	// A file of the secret's bytes that is no key, and one of another
	// certificate's key (its own bytes the secret).
	junk := filepath.Join(dir, "junk.key")
	testpki.WriteFile(t, junk, []byte("-----BEGIN PRIVATE KEY-----\n"+base64.StdEncoding.EncodeToString([]byte(secret))+"\n-----END PRIVATE KEY-----\n"))
	other := ca.Server(t, testpki.Options{})
	otherKey := filepath.Join(dir, "other.key")
	testpki.WriteFile(t, otherKey, other.KeyPEM)
	otherBody := strings.Split(string(other.KeyPEM), "\n")[1] // a line of its base64
	values := []struct {
		name, value string
		secrets     []string // none of which the error may hold
	}{
		{"bare text", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" + secret, []string{secret}},
		{"PEM text", "-----BEGIN PRIVATE KEY-----\n" + secret + "\n-----END PRIVATE KEY-----", []string{secret}},
		{"flattened PEM text", `-----BEGIN PRIVATE KEY-----\n` + secret + `\n-----END PRIVATE KEY-----`, []string{secret}},
		{"a file that holds no key", junk, []string{secret, base64.StdEncoding.EncodeToString([]byte(secret))}},
		{"a file of another certificate's key", otherKey, []string{otherBody}},
	}
	n := 0
	for _, s := range config.Settings() {
		if !s.Secret() {
			continue
		}
		n++
		env, ok := beside[s.Flag]
		if !ok {
			t.Errorf("--%s is secret: say in beside what it is read with", s.Flag)
			continue
		}
		for _, v := range values {
			t.Run(s.Flag+"/"+v.name, func(t *testing.T) {
				e := map[string]string{s.Env: v.value}
				for k, val := range env {
					e[k] = val
				}
				err := startErr(t, nil, e)
				if err == nil {
					t.Fatal("started")
				}
				if !strings.Contains(err.Error(), s.Env) && !strings.Contains(err.Error(), "--"+s.Flag) {
					t.Errorf("the error does not name the setting: %v", err)
				}
				for _, sec := range v.secrets {
					if strings.Contains(err.Error(), sec) {
						t.Errorf("the error holds %q: %v", sec, err)
					}
				}
			})
		}
	}
	if n == 0 {
		t.Fatal("no secret setting")
	}
}

// TestStartRefusesWeakServerCertificate: a server certificate of a key
// BCP 195 does not allow stops the start, naming the setting by its flag
// and its variable as a bad setting's error does; Go's TLS served it.
func TestStartRefusesWeakServerCertificate(t *testing.T) {
	dir := t.TempDir()
	weak := testpki.NewCA(t, "Server CA").Server(t, testpki.Options{RSA: true, RSABits: 1024}).WriteFiles(t, dir, "server")
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"set by the environment", nil, map[string]string{"SCP_TLS_LISTEN": "127.0.0.1:0", "SCP_TLS_CERT": weak.Cert, "SCP_TLS_KEY": weak.Key},
			"start TLS listener: servertls: SCP_TLS_CERT (or --tls-cert) " + weak.Cert + ": certificate "},
		{"set by the flag", []string{"--tls-listen", "127.0.0.1:0", "--tls-cert", weak.Cert, "--tls-key", weak.Key}, nil,
			"start TLS listener: servertls: --tls-cert (or SCP_TLS_CERT) " + weak.Cert + ": certificate "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := startErr(t, tt.args, tt.env); err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "has an RSA key of 1024 bits, fewer than 2048") {
				t.Fatalf("start: %v, want it to say %q and why", err, tt.want)
			}
		})
	}
}
