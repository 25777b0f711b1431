package logname

import (
	"errors"
	"strings"
	"testing"
)

// FuzzRedact: keys come from outside (S3 notifications, object listings);
// naming and redacting never panic, UIDs are digit-and-dot runs of the key,
// and the redacted error keeps the original in its chain.
func FuzzRedact(f *testing.F) {
	f.Add("incoming/2026/03/04/1.2.3/1.2.3.4/1.2.3.4.5.dcm", "put %s: open /data/%s: no such file")
	f.Add("1..2...3.", "%s")
	f.Add("", "nothing")
	f.Add("unknown-study/unknown-series/9.dcm", "x%sy")
	n, err := New([]byte(strings.Repeat("f", MinKeyLen)))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, key, msg string) {
		for _, u := range UIDs(key) {
			if !strings.Contains(key, u) || strings.Trim(u, "0123456789.") != "" || !strings.Contains(u, ".") {
				t.Fatalf("UIDs(%q) gave %q", key, u)
			}
		}
		orig := errors.New(strings.ReplaceAll(msg, "%s", key))
		red := n.Redact(orig, key)
		if !errors.Is(red, orig) {
			t.Fatal("the original error left the chain")
		}
		if len(key) > len(Prefix)+2*nameBytes && strings.Contains(red.Error(), key) {
			t.Fatalf("Redact left the key %q in %q", key, red.Error())
		}
		if got := n.Key(key).String(); got != n.Name(key) || !strings.HasPrefix(got, Prefix) {
			t.Fatalf("Key(%q) prints %q", key, got)
		}
	})
}

// FuzzURLUserInfo: a secret in user info is never shown by URL or Origin,
// whatever it holds ("?", "#", "/", "@") and whatever follows it.
func FuzzURLUserInfo(f *testing.F) {
	f.Add("pa?ss", "hook.example/x?token=1")
	f.Add("tok#en", "hook.example/y")
	f.Add("p/w", "a@b.example/c?d@e")
	f.Fuzz(func(t *testing.T, secret, rest string) {
		const mark = "SECRET"
		if strings.Contains(rest, mark) {
			return
		}
		s := "https://user:" + mark + secret + "@" + rest
		for _, got := range []string{URL(s), Origin(s)} {
			if strings.Contains(got, mark) {
				t.Fatalf("%q quoted as %q", s, got)
			}
		}
	})
}

// FuzzURL: URL never panics and never keeps a query, a fragment or user
// info (an "@" is the hidden user info's mark alone).
func FuzzURL(f *testing.F) {
	f.Add("https://user:pw@hook.example/x?token=1#f")
	f.Add("a@b/c?d")
	f.Fuzz(func(t *testing.T, s string) {
		got := URL(s)
		if strings.ContainsAny(got, "?#") || strings.Count(got, "@") > strings.Count(got, "(not shown)@") {
			t.Fatalf("URL(%q) = %q", s, got)
		}
	})
}
