// Package auditmessagetest checks rendered audit messages against the DICOM
// audit message schema (PS3.15 A.5.1) with xmllint, for the tests of every
// package that produces or carries them.
package auditmessagetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/auditmessage"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// SchemaPath is the RELAX NG (XML syntax) form of the PS3.15 A.5.1 schema
// kept in the auditmessage package's testdata.
func SchemaPath() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata", "dicom-audit-message.rng")
}

// Xmllint returns xmllint's path. Without it the test is skipped on a
// developer machine and fails under CI (testenv).
func Xmllint(t testing.TB) string {
	t.Helper()
	return testenv.LookPath(t, "xmllint")
}

// Validate fails t unless doc is valid against the schema and meets the
// table of its event in PS3.15 A.5.3 (auditmessage.Check).
func Validate(t testing.TB, doc []byte) {
	t.Helper()
	if err := Check(t, doc); err != nil {
		t.Errorf("not a valid DICOM audit message: %v\n%s", err, doc)
	}
	if err := auditmessage.Check(doc); err != nil {
		t.Errorf("not what PS3.15 A.5.3 requires of its event: %v\n%s", err, doc)
	}
}

// Check validates doc and returns xmllint's complaint, if any.
func Check(t testing.TB, doc []byte) error {
	t.Helper()
	xmllint := Xmllint(t)
	f := filepath.Join(t.TempDir(), "message.xml")
	if err := os.WriteFile(f, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(xmllint, "--noout", "--relaxng", SchemaPath(), f).CombinedOutput()
	if err != nil {
		return &invalid{out: string(out), err: err}
	}
	return nil
}

type invalid struct {
	out string
	err error
}

func (e *invalid) Error() string { return e.err.Error() + ": " + e.out }
