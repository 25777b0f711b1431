// Package awsemutest finds the emulators awsemu runs, for tests: where
// make test-deps and make node-tools install them, or where RIE_BIN and
// DYNALITE_BIN say. A missing one skips the test on a developer's machine
// and fails it under CI (testenv.Missing).
package awsemutest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// RIE returns the Lambda runtime interface emulator's binary.
func RIE(t testing.TB) string {
	t.Helper()
	testenv.RequireLinux(t, "the Lambda runtime interface emulator runs linux binaries")
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if home, err := os.UserHomeDir(); err == nil {
			gopath = filepath.Join(home, "go")
		}
	}
	candidates := []string{os.Getenv("RIE_BIN"), filepath.Join(testenv.ModuleRoot(t), "bin/tools/aws-lambda-rie"), "aws-lambda-rie"}
	if gopath != "" {
		candidates = append(candidates, filepath.Join(gopath, "bin", "aws-lambda-rie"))
	}
	rie := find(candidates...)
	if rie == "" {
		testenv.Missing(t, "aws-lambda-rie (the Lambda runtime interface emulator)",
			"make test-deps, which go installs the pinned version into bin/tools (or set RIE_BIN)")
	}
	return rie
}

// Dynalite returns node and dynalite's command-line script.
func Dynalite(t testing.TB) (node, cli string) {
	t.Helper()
	node = testenv.LookPath(t, "node")
	cli = find(os.Getenv("DYNALITE_BIN"), filepath.Join(testenv.ModuleRoot(t), ".tools/node/node_modules/dynalite/cli.js"))
	if cli == "" {
		testenv.Missing(t, "dynalite (DynamoDB emulator)", "make node-tools, which installs the pinned dynalite into .tools/node (or set DYNALITE_BIN)")
	}
	return node, cli
}

// find returns the first existing file among candidates (a bare name is
// looked up in PATH), or "".
func find(candidates ...string) string {
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if !strings.Contains(c, "/") {
			if p, err := exec.LookPath(c); err == nil {
				return p
			}
			continue
		}
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return c
		}
	}
	return ""
}
