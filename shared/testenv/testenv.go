// Package testenv is what every test asks about the machine it runs on: the
// tools, privileges and services a test needs, where the shared test data
// is, and the project's binaries built once per test process (in the
// spirit of Go's own internal/testenv).
//
// A test that lacks something it needs calls one of the Require functions
// (or Missing itself). On a developer's machine that skips the test, with a
// message naming the install command; under CI (env CI set, as .ci/run
// sets it) it fails the test, because a CI run that skipped what it could
// not install would be green without having tested anything.
package testenv

import (
	"bufio"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// debianPackages maps each command or file the tests need to the Debian
// package that provides it. .ci/install-deps.sh installs from the same
// file, so a tool a test names is one CI installs.
//
//go:embed debian-packages.txt
var debianPackages string

// CI reports whether the tests run under CI: env CI set to anything but
// a false value ("0", "false"). CI providers set CI=true, and so does .ci/run.
func CI() bool {
	v := os.Getenv("CI")
	if v == "" {
		return false
	}
	if b, err := strconv.ParseBool(v); err == nil {
		return b
	}
	return true
}

// Missing ends the test for want of what, naming install, the command that
// provides it: a skip on a developer's machine, a failure under CI. Every
// test that cannot run because something is missing comes through here.
func Missing(t testing.TB, what, install string) {
	t.Helper()
	if CI() {
		t.Fatalf("testenv: missing %s, and under CI (CI=%s) nothing may be missing: %s", what, os.Getenv("CI"), install)
	}
	t.Skipf("testenv: missing %s: %s (a skip here, a failure under CI)", what, install)
}

// Package returns the Debian package that provides a command or file the
// tests use, from debian-packages.txt.
func Package(name string) (string, bool) {
	sc := bufio.NewScanner(strings.NewReader(debianPackages))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == name {
			return f[1], true
		}
	}
	return "", false
}

// installCommand says how to get a command or file listed in
// debian-packages.txt. An unlisted name fails the test: the list is what CI
// installs, so a tool missing from it would never be tested.
func installCommand(t testing.TB, name string) string {
	t.Helper()
	pkg, ok := Package(name)
	if !ok {
		t.Fatalf("testenv: %s is not in shared/testenv/debian-packages.txt: add it with its Debian package so CI installs it", name)
	}
	return "apt-get install " + pkg + " (or `make test-deps` as root)"
}

// LookPath returns the path of a command the test needs (see Missing).
func LookPath(t testing.TB, tool string) string {
	t.Helper()
	install := installCommand(t, tool)
	p, err := exec.LookPath(tool)
	if err != nil {
		Missing(t, "command "+tool, install)
	}
	return p
}

// RequireTools requires every named command (see LookPath).
func RequireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		LookPath(t, tool)
	}
}

// RequireFile requires a file listed in debian-packages.txt, such as a
// plugin that is not a command (see Missing), and returns its path. The
// listed path may be a glob (a multiarch directory); the first match is
// returned.
func RequireFile(t testing.TB, path string) string {
	t.Helper()
	install := installCommand(t, path)
	matches, err := filepath.Glob(path)
	if err != nil || len(matches) == 0 {
		Missing(t, path, install)
	}
	return matches[0]
}

// RequireRoot requires running as root, for why (see Missing).
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "root privileges ("+why+")", "run the tests as root: sudo -E make test")
	}
}

// RequireTUN requires /dev/net/tun, the device userspace tunnels open.
func RequireTUN(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		Missing(t, "/dev/net/tun", "modprobe tun; in a container, start it with --device /dev/net/tun --cap-add NET_ADMIN")
	}
}

// RequireLinux requires a Linux kernel, for why (see Missing).
func RequireLinux(t testing.TB, why string) {
	t.Helper()
	if runtime.GOOS != "linux" {
		Missing(t, "Linux ("+why+"; this is "+runtime.GOOS+")", "run the tests on Linux, as CI does")
	}
}

// RequireService ends the test when a service it starts or reaches is not
// available: err says why, install how to get it (see Missing).
func RequireService(t testing.TB, name string, err error, install string) {
	t.Helper()
	if err != nil {
		Missing(t, fmt.Sprintf("%s (%v)", name, err), install)
	}
}
