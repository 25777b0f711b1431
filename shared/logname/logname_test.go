package logname

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const (
	study  = "1.2.826.0.1.3680043.10.543.7"
	series = study + ".1"
	sop    = series + ".42"
	key    = "incoming/2026/03/04/" + study + "/" + series + "/" + sop + ".dcm"
)

func namer(t *testing.T, k string) *Namer {
	t.Helper()
	n, err := New([]byte(k))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

var testKey = strings.Repeat("k", MinKeyLen)

// TestName: HMAC-SHA-256 under the deployment's key, truncated, the same
// as the documented openssl recipe computes.
func TestName(t *testing.T) {
	n := namer(t, testKey)
	m := hmac.New(sha256.New, []byte(testKey))
	m.Write([]byte(key))
	want := Prefix + hex.EncodeToString(m.Sum(nil))[:20]
	if got := n.Name(key); got != want {
		t.Errorf("Name = %s, want %s", got, want)
	}
	if again := n.Name(key); again != want {
		t.Errorf("the same key named again %s, first %s", again, want)
	}
	if n.Name(key) == n.Name(key+"x") {
		t.Error("two keys share a name")
	}
	if other := namer(t, strings.Repeat("o", MinKeyLen)); other.Name(key) == n.Name(key) {
		t.Error("two deployment keys give the same name")
	}
	var none *Namer
	first := none.Name(key)
	if again := none.Name(key); again != first || first == want || !strings.HasPrefix(first, Prefix) {
		t.Errorf("nil Namer: %s, then %s", first, again)
	}
	if _, err := New([]byte("short")); !errors.Is(err, ErrShortKey) {
		t.Errorf("New(short) = %v, want ErrShortKey", err)
	}
}

// TestKeyNeverPrints: no way of printing a Key shows the key or its UIDs.
func TestKeyNeverPrints(t *testing.T) {
	n := namer(t, testKey)
	k := n.Key(key)
	name := n.Name(key)
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("stored", "object", k, slog.Any("any", k), slog.Group("g", "object", k))
	log.Info("struct", "v", struct{ K Key }{k})
	log.LogAttrs(context.Background(), slog.LevelInfo, "attrs", slog.Any("object", k))
	slog.New(slog.NewTextHandler(&buf, nil)).Info("text", "object", k)
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
		fmt.Fprintf(&buf, verb+"\n", k)
	}
	fmt.Fprintln(&buf, k, []Key{k}, map[string]Key{"k": k}, &k)
	j, err := json.Marshal(map[string]any{"k": k})
	if err != nil {
		t.Fatal(err)
	}
	buf.Write(j)
	out := buf.String()
	for _, secret := range append([]string{key}, UIDs(key)...) {
		if strings.Contains(out, secret) {
			t.Errorf("output holds %q:\n%s", secret, out)
		}
	}
	if strings.Count(out, name) < 10 {
		t.Errorf("output names the object too rarely:\n%s", out)
	}
}

// TestRedact: lower layers' messages carry keys as file paths, request
// URLs and derived keys; all of them lose the key and every UID in it.
func TestRedact(t *testing.T) {
	n := namer(t, testKey)
	name := n.Name(key)
	sentinel := errors.New("sentinel")
	conflict := strings.TrimSuffix(key, ".dcm") + ".conflict-0123456789abcdef.dcm"
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"path", &fs.PathError{Op: "open", Path: "/data/objects/" + key, Err: fs.ErrNotExist},
			"open /data/objects/" + name + ": file does not exist"},
		{"url", &url.Error{Op: "Put", URL: "http://127.0.0.1:9000/bucket/site-a/" + key + "?partNumber=1", Err: sentinel},
			`Put "http://127.0.0.1:9000/bucket/site-a/` + name + `?partNumber=1": sentinel`},
		{"conflict key", fmt.Errorf("put %s: %w", conflict, sentinel),
			"put incoming/2026/03/04/" + name + "/" + name + "/" + name + ".conflict-0123456789abcdef.dcm: sentinel"},
		{"study alone", fmt.Errorf("study %s: %w", study, sentinel), "study " + name + ": sentinel"},
		{"a directory of the key", &fs.PathError{Op: "mkdir", Path: "/data/objects/incoming/2026/03/04/" + study, Err: fs.ErrPermission},
			"mkdir /data/objects/incoming/2026/03/04/" + name + ": permission denied"},
		{"nothing to redact", fmt.Errorf("disk full: %w", sentinel), "disk full: sentinel"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := n.Redact(c.err, key)
			if diff := cmp.Diff(c.want, got.Error()); diff != "" {
				t.Errorf("message (-want +got):\n%s", diff)
			}
			for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
				if s := fmt.Sprintf(verb, got); strings.Contains(s, sop) {
					t.Errorf("%s prints the UID: %s", verb, s)
				}
			}
			if c.name != "nothing to redact" && !errors.Is(got, sentinel) && !errors.Is(got, fs.ErrNotExist) && !errors.Is(got, fs.ErrPermission) {
				t.Errorf("the chain was lost: %v", got)
			}
			if !IsRedacted(got) {
				t.Error("IsRedacted = false")
			}
		})
	}
	if n.Redact(nil, key) != nil {
		t.Error("Redact(nil) is not nil")
	}
	// A sender's UIDs of one component: the study's directory alone in a
	// mkdir's error (found by a probe: only the whole key was replaced).
	dotless := "incoming/2026/03/04/12345678/87654321/1122334455.dcm"
	err := n.Redact(&fs.PathError{Op: "mkdir", Path: "/data/objects/incoming/2026/03/04/12345678", Err: fs.ErrPermission}, dotless)
	if want := "mkdir /data/objects/incoming/2026/03/04/" + n.Name(dotless) + ": permission denied"; err.Error() != want {
		t.Errorf("dotless UID: %q, want %q", err, want)
	}
}

func TestUIDs(t *testing.T) {
	cases := []struct {
		key  string
		want []string
	}{
		{key, []string{study, series, sop}},
		{"site-a/metadata/2026/03/04/1.2/1.2.3/1.2.3.4.summary.json", []string{"1.2", "1.2.3", "1.2.3.4"}},
		{"incoming/2026/03/04/unknown-study/unknown-series/1.2.3.conflict-0123abcd.dcm", []string{"1.2.3"}},
		{"audit/2026/03/04/assoc-7.json", nil},
		// UIDs of one component, as a sender may choose them.
		{"incoming/2026/03/04/12345/123456/1234567.dcm", []string{"12345", "123456", "1234567"}},
		{"incoming/2026/03/04/1.2.3/98765/1234.conflict-0123abcd.dcm", []string{"1.2.3", "98765"}},
		{"v2.dcm", nil},
		{"", nil},
	}
	for _, c := range cases {
		if diff := cmp.Diff(c.want, UIDs(c.key)); diff != "" {
			t.Errorf("UIDs(%q) (-want +got):\n%s", c.key, diff)
		}
	}
}

// TestReplaceUIDs: every UID in a text from outside is replaced, the
// longest first, so a UID that begins another leaves no tail of it.
func TestReplaceUIDs(t *testing.T) {
	cases := []struct{ text, want string }{
		{"no transaction 1.2.3 for 1.2.3.4", "no transaction <uid> for <uid>"},
		{"instance 1.2.3.4 of transaction 1.2.3", "instance <uid> of transaction <uid>"},
		{"Processing failure", "Processing failure"},
		{"", ""},
	}
	for _, c := range cases {
		if got := ReplaceUIDs(c.text, "<uid>"); got != c.want {
			t.Errorf("ReplaceUIDs(%q) = %q, want %q", c.text, got, c.want)
		}
	}
}

func TestLoadOrCreate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, KeyFile)
	var wg sync.WaitGroup
	names := make([]string, 8)
	errs := make([]error, 8)
	for i := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := LoadOrCreate(path)
			errs[i] = err
			if err == nil {
				names[i] = n.Name(key)
			}
		}()
	}
	wg.Wait()
	for i := range names {
		if errs[i] != nil || names[i] != names[0] {
			t.Fatalf("concurrent starts: %v, names %v", errs[i], names)
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	if n := namer(t, strings.TrimSpace(string(b))); n.Name(key) != names[0] {
		t.Error("the key file's text is not the key")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	again, err := LoadOrCreate(path)
	if err != nil || again.Name(key) != names[0] {
		t.Errorf("reload: %v", err)
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a world-readable key file: %v", err)
	}
	short := filepath.Join(dir, "short.key")
	if err := os.WriteFile(short, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(short); !errors.Is(err, ErrShortKey) {
		t.Errorf("short key file: %v", err)
	}
	if _, err := LoadOrCreate(filepath.Join(dir, "missing", KeyFile)); err == nil {
		t.Error("a key file in a missing directory was created")
	}
}

func TestFromEnv(t *testing.T) {
	env := func(v string) func(string) string {
		return func(name string) string {
			if name == EnvKey {
				return v
			}
			return ""
		}
	}
	if n, ok, err := FromEnv(env("")); n != nil || ok || err != nil {
		t.Errorf("unset: %v %v %v", n, ok, err)
	}
	if _, ok, err := FromEnv(env("short")); !ok || !errors.Is(err, ErrShortKey) || !strings.Contains(err.Error(), EnvKey) {
		t.Errorf("short: %v %v", ok, err)
	}
	n, ok, err := FromEnv(env(" " + testKey + "\n"))
	if !ok || err != nil || n.Name(key) != namer(t, testKey).Name(key) {
		t.Errorf("set: %v %v", ok, err)
	}
}

// TestURL: a URL is quoted without its user info, query and fragment,
// whether it parses or not, and nothing else of it is cut.
func TestURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:pw@hook.example/x?token=1": "https://hook.example/x",
		"http://127.0.0.1:9/h#frag":              "http://127.0.0.1:9/h",
		"tls://feed:pw@collector.example:6514":   "tls://collector.example:6514",
		"https://hook.example/a@b?c=d":           "https://(not shown)@b",
		"hook:pw@hooks.example/x?token=1":        "hooks.example/x",
		"s3://bucket/%zz?x=1":                    "s3://bucket/%zz",
		"https://a@b@hook.example":               "https://hook.example",
		"file://./data/objects":                  "file://./data/objects",
		// User info with a slash (a base64 token): not cut at the slash.
		"https://hook:pw/x@hook.example/y":      "https://(not shown)@hook.example/y",
		"https://tok/en@hook.example/y?token=1": "https://(not shown)@hook.example/y",
		"hook:pw/x@hook.example/y":              "(not shown)@hook.example/y",
		// User info with a "?" or "#", or a query or fragment with an "@": which it is cannot be told.
		"https://hook:pa?ss@hook.example/y":       "https://(not shown)",
		"https://tok#en@hook.example/y?token=1":   "https://(not shown)",
		"tls://feed:p?w#x@collector.example:6514": "tls://(not shown)",
		"https://hook.example/x?to=a@b.example":   "https://(not shown)",
		"hook:pa?ss@hook.example":                 "(not shown)",
		"":                                        "",
	} {
		if got := URL(in); got != want {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestOrigin: a webhook's URL is quoted by its scheme and host alone, its
// path (where Slack's, Teams' and Discord's carry their token) as "/…".
func TestOrigin(t *testing.T) {
	for in, want := range map[string]string{
		"https://hooks.slack.example/services/T0/B0/tok": "https://hooks.slack.example/…",
		"https://user:pw@hook.example/x?token=1":         "https://hook.example/…",
		"http://127.0.0.1:9/":                            "http://127.0.0.1:9/",
		"http://127.0.0.1:9":                             "http://127.0.0.1:9",
		"https://hook:pw/x@hook.example/y":               "https://(not shown)@hook.example/…",
		"hook.example/tok":                               "hook.example/…",
		"":                                               "",
	} {
		if got := Origin(in); got != want {
			t.Errorf("Origin(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRedactURLAndWithoutPath: the errors quote what may be secret no
// more, and keep the original in their chain.
func TestRedactURLAndWithoutPath(t *testing.T) {
	//lint:ignore SA1007 a URL that does not parse, on purpose
	_, parseErr := url.Parse("https://u:pw@hook.example/%zz?token=pw")
	//lint:ignore SA1007 a URL that does not parse, on purpose
	_, portErr := url.Parse("https://u:pw/x@hook.example/y")
	//lint:ignore SA1007 a URL that does not parse, on purpose
	_, queryErr := url.Parse("https://u:p?pw@hook.example/y")
	// What the HTTP client says of a URL with a "?" in its password, which parses (host "tok", query "pw@…").
	clientErr := &url.Error{Op: "Post", URL: "https://tok?pw@hook.example/y", Err: errors.New("no such host")}
	_, openErr := os.Open("-----BEGIN PRIVATE KEY-----\npw\n-----END PRIVATE KEY-----")
	tests := []struct {
		name string
		err  error
		orig error
		want string
	}{
		{"URL", RedactURL(parseErr, "https://u:pw@hook.example/%zz?token=pw"), parseErr, `parse "https://hook.example/%zz": invalid URL escape "%zz"`},
		// url.Parse quotes the password as a port: the detail goes too.
		{"URL with a slash in its password", RedactURL(portErr, "https://u:pw/x@hook.example/y"), portErr, `parse "https://(not shown)@hook.example/y": detail not shown`},
		// A "?" in the password: url.Parse quotes "p" as a port; neither is shown, nor anything past the scheme.
		{"URL with a ? in its password", RedactURL(queryErr, "https://u:p?pw@hook.example/y"), queryErr, `parse "https://(not shown)": detail not shown`},
		{"client error, ? in the password", RedactURL(clientErr, "https://tok?pw@hook.example/y"), clientErr, `Post "https://(not shown)": no such host`},
		{"path", WithoutPath(openErr), openErr, "open (the value given, not shown): no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want || strings.Contains(got, "pw") {
				t.Errorf("error %q, want %q", got, tt.want)
			}
			if !errors.Is(tt.err, tt.orig) {
				t.Error("the original error left the chain")
			}
		})
	}
}
