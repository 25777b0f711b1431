package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// chromium runs Debian's headless chromium with args plus url and returns
// its standard output (the DOM for --dump-dom).
func chromium(t *testing.T, args []string, url string) string {
	t.Helper()
	// A browser that dies by a signal (a segmentation fault or an abort of
	// chromium itself, seen on a loaded CI machine) said nothing of the page:
	// it is run again, at most twice, each crash logged. A page's own error is
	// in the DOM or an exit status, never a signal, and fails at once.
	for attempt := 1; ; attempt++ {
		out, stderr, err := runChromium(t, args, url)
		var exit *exec.ExitError
		if err != nil && attempt < 3 && errors.As(err, &exit) && crashed(exit) {
			t.Logf("chromium %v %s crashed (%v), running it again; its stderr's end:\n%s", args, url, err, stderr[max(0, len(stderr)-crashTail):])
			continue
		}
		if err != nil {
			t.Fatalf("chromium %v %s: %v\n%s", args, url, err, stderr)
		}
		return out
	}
}

// crashTail is how much of a crashed attempt's stderr is logged, its end (where the crash is told).
const crashTail = 2 << 10

// crashed: the process died by a signal of its own fault (not killed at the
// test's timeout).
func crashed(exit *exec.ExitError) bool {
	ws, ok := exit.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		return false
	}
	switch ws.Signal() {
	case syscall.SIGSEGV, syscall.SIGABRT, syscall.SIGBUS, syscall.SIGILL, syscall.SIGTRAP:
		return true
	}
	return false
}

func runChromium(t *testing.T, args []string, url string) (out, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--user-data-dir=" + t.TempDir(), "--window-size=1400,900"}
	cmd := exec.CommandContext(ctx, "chromium", append(append(base, args...), url)...)
	var errOut strings.Builder
	cmd.Stderr = &errOut
	b, err := cmd.Output()
	return string(b), errOut.String(), err
}

func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(testenv.ModuleRoot(t), "test", "artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestPortalInBrowser loads the portal in headless chromium: the studies
// table lists the study and its page lists its series. Screenshots of both
// pages are saved in test/artifacts/.
func TestPortalInBrowser(t *testing.T) {
	need(t, "dcmsend", "chromium")
	dir := t.TempDir()
	n := newNode(t, filepath.Join(dir, "data"))
	n.start()
	files := writeSynthStudy(t, dir)
	if out, err := n.dcmsend("LOCAL_AE", files...); err != nil {
		t.Fatalf("dcmsend: %v\n%s", err, out)
	}
	testenv.Eventually(t, "study indexed", func() bool {
		for _, s := range n.studies() {
			if s.StudyInstanceUID == synthStudy && s.InstanceCount == len(synthInstances) {
				return true
			}
		}
		return false
	})
	// The site sends the study again: the SCP finds every instance held,
	// nothing new is stored, and the study says it was sent again
	// (lastSent) while last received stays the first sending's.
	var received time.Time
	for _, s := range n.studies() {
		if s.StudyInstanceUID == synthStudy {
			received = s.LastReceived
		}
	}
	if out, err := n.dcmsend("LOCAL_AE", files...); err != nil {
		t.Fatalf("dcmsend again: %v\n%s", err, out)
	}
	testenv.Eventually(t, "the resend noted in its study", func() bool {
		for _, s := range n.studies() {
			if s.StudyInstanceUID == synthStudy && s.LastSent.After(received) {
				return true
			}
		}
		return false
	})
	for _, s := range n.studies() {
		if s.StudyInstanceUID == synthStudy && (!s.LastReceived.Equal(received) || s.InstanceCount != len(synthInstances)) {
			t.Errorf("after the resend: last received %v (was %v), %d instances", s.LastReceived, received, s.InstanceCount)
		}
	}
	base := "http://" + n.portal

	dom := chromium(t, []string{"--dump-dom"}, base+"/")
	row := regexp.MustCompile(`(?s)<tr class="study" data-study-uid="` + regexp.QuoteMeta(synthStudy) + `">(.*?)</tr>`).FindStringSubmatch(dom)
	if row == nil {
		t.Fatalf("studies table has no row for the study; DOM:\n%s", dom)
	}
	for _, want := range []string{"Roentgen Wilhelm", synthPatient, "CT", "LOCAL_AE", `<td class="n">2</td>`, `<td class="n">5</td>`, `<span class="mark resent"`} {
		if !strings.Contains(row[1], want) {
			t.Errorf("study row lacks %q:\n%s", want, row[1])
		}
	}

	studyURL := base + "/studies/" + synthStudy
	dom = chromium(t, []string{"--dump-dom"}, studyURL)
	series := regexp.MustCompile(`<tr class="series" data-series-uid="([0-9.]+)">`).FindAllStringSubmatch(dom, -1)
	var got []string
	for _, m := range series {
		got = append(got, m[1])
	}
	if want := []string{synthStudy + ".1", synthStudy + ".2"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("series rows %v, want %v", got, want)
	}
	if !regexp.MustCompile(`<dd id="last-sent">[^<]+ <span class="mark resent"`).MatchString(dom) {
		t.Error("the study page does not say the study was sent again")
	}

	art := artifactsDir(t)
	for name, url := range map[string]string{"portal-studies.png": base + "/", "portal-study.png": studyURL} {
		path := filepath.Join(art, name)
		_ = os.Remove(path)
		chromium(t, []string{"--screenshot=" + path, "--hide-scrollbars"}, url)
		st, err := os.Stat(path)
		if err != nil || st.Size() < 1000 {
			t.Errorf("screenshot %s: %v", path, err)
			continue
		}
		t.Logf("screenshot saved: %s", path)
	}
}
