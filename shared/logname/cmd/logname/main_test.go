package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/logname"
)

func TestRun(t *testing.T) {
	const key = "0123456789abcdef0123456789abcdef-test"
	names, err := logname.New([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), logname.KeyFile)
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := "site-a/incoming/2026/03/04/1.2.3/1.2.3.4/1.2.3.4.5.dcm"
	b := "site-a/incoming/2026/03/04/1.2.3/1.2.3.4/1.2.3.4.6.dcm"
	keys := a + "\n\n  " + b + "\n"
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == logname.EnvKey {
				return v
			}
			return ""
		}
	}
	cases := []struct {
		name    string
		args    []string
		env     string
		want    string
		wantErr string
	}{
		{"every key, key from the environment", nil, key, names.Name(a) + " " + a + "\n" + names.Name(b) + " " + b + "\n", ""},
		{"find one, key from a file", []string{"-key-file", keyFile, "-find", names.Name(b)}, "", names.Name(b) + " " + b + "\n", ""},
		{"a name not among the keys", []string{"-find", names.Name(a) + ",obj-00000000000000000000"}, key, names.Name(a) + " " + a + "\n", "found 1 of the 2 names"},
		{"no key", nil, "", "", "set " + logname.EnvKey + " or pass -key-file"},
		{"short key", nil, "short", "", "shorter than"},
		{"a key as an argument", []string{key}, key, "", "keys are read from standard input"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(c.args, env(c.env), strings.NewReader(keys), &out)
			if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("err = %v, want %q", err, c.wantErr)
			}
			if out.String() != c.want {
				t.Errorf("output:\n%s\nwant:\n%s", out.String(), c.want)
			}
		})
	}
}
