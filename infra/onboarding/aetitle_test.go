package onboarding

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/google/go-cmp/cmp"
	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	"github.com/yuin/goldmark/text"
)

// TestKitWritesEveryAETitleValidationTakes: one table of AE titles, each
// given as the SCP's own (dicom.aeTitle) and as a site's calling title. A
// title infra's config validation takes (infra/config, the deploy's check)
// makes a kit whose README shows it as it is in every code span, its
// tables' included, and whose commands, the README's and verify.sh, give it
// to echoscu and storescu as it is; one validation refuses makes no kit.
// The kit refused " ' ` and $, which validation took: a deploy that passed
// validation failed `make onboarding`, and a backtick or a | would have
// broken the README's code spans and tables.
func TestKitWritesEveryAETitleValidationTakes(t *testing.T) {
	const called, calling = "DICOM_INGEST", "EXAMPLE_PACS" // testdata's
	baseline := kitOf(t, called, calling)
	for _, tc := range []struct {
		ae                  string
		asCalled, asCalling bool // taken
	}{
		{"PLAIN_AE", true, true},
		{`O'BRIEN`, true, true},
		{`CT"1`, true, true},
		{"CT`1", true, true},
		{"`CT``1`", true, true},
		{"CT$HOME", true, true},
		{"$(reboot)", true, true},
		{"A B*_<b>&", true, true},
		{"CT|1", true, false},  // the allowlist's separator
		{"CT,1", true, false},  // the allowlist's separator
		{"CT=1", true, false},  // the commitment peers' separator
		{`CT\1`, false, false}, // no AE title
		{"CT\t1", false, false},
		{"AN_AE_TITLE_OF_17", false, false},
	} {
		for _, role := range []struct {
			name      string
			taken     bool
			own, pacs string
		}{
			{"called", tc.asCalled, tc.ae, calling},
			{"calling", tc.asCalling, called, tc.ae},
		} {
			t.Run(fmt.Sprintf("%s/%q", role.name, tc.ae), func(t *testing.T) {
				env, err := envWithTitles(t, role.own, role.pacs)
				if !role.taken {
					if err == nil {
						t.Fatalf("validation took %q", tc.ae)
					}
					return
				}
				if err != nil {
					t.Fatalf("validation refused %q: %v", tc.ae, err)
				}
				got := kitFrom(t, env, role.own)
				// The baseline's plain titles, replaced by these as the
				// kit must give them: shell-quoted after -aet and -aec.
				want := kit{verify: [][]string{}}
				for _, s := range baseline.spans {
					for _, r := range []struct{ from, to string }{{called, role.own}, {calling, role.pacs}} {
						if strings.HasPrefix(s, "-ae") {
							s = strings.ReplaceAll(s, r.from, shellQuote(r.to))
						} else if s == r.from {
							s = r.to
						}
					}
					want.spans = append(want.spans, s)
				}
				for _, cmd := range baseline.verify {
					cmd = slices.Clone(cmd)
					for i := range cmd {
						switch cmd[i] {
						case called:
							cmd[i] = role.own
						case calling:
							cmd[i] = role.pacs
						}
					}
					want.verify = append(want.verify, cmd)
				}
				if diff := cmp.Diff(want, got, cmp.AllowUnexported(kit{})); diff != "" {
					t.Errorf("the kit does not give %q as it is (-want +got):\n%s", tc.ae, diff)
				}
			})
		}
	}
}

// kit is what a site's kit says of its AE titles: every code span of its
// README, as a Markdown reader reads it, and the arguments of every command
// verify.sh and the README's verification block run.
type kit struct {
	spans  []string
	verify [][]string
}

// envWithTitles loads testdata's dev environment with these AE titles, the
// SCP's own and example-hospital's, through infra/config's validation.
func envWithTitles(t *testing.T, own, pacs string) (EnvConfig, error) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "config", "dev.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	c["dicom"].(map[string]any)["aeTitle"] = own
	c["sites"].([]any)[0].(map[string]any)["callingAETitle"] = pacs
	dir := t.TempDir()
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "dev.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return LoadEnvConfig(dir, "dev")
}

func kitOf(t *testing.T, own, pacs string) kit {
	t.Helper()
	env, err := envWithTitles(t, own, pacs)
	if err != nil {
		t.Fatal(err)
	}
	return kitFrom(t, env, own)
}

// kitFrom renders example-hospital's kit, the deployment's CalledAETitle
// output being own, and reads its README and runs its commands with
// stand-ins for echoscu and storescu that write down their arguments.
func kitFrom(t *testing.T, env EnvConfig, own string) kit {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "example-outputs.json"))
	if err != nil {
		t.Fatal(err)
	}
	var stacks map[string]map[string]string
	if err := json.Unmarshal(raw, &stacks); err != nil {
		t.Fatal(err)
	}
	for _, outs := range stacks {
		if _, ok := outs[OutCalledAETitle]; ok {
			outs[OutCalledAETitle] = own
		}
	}
	data, err := json.Marshal(stacks)
	if err != nil {
		t.Fatal(err)
	}
	outs, err := ParseOutputs(strings.NewReader(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	files := renderExample(t, env, outs)
	readme := []byte(files["README.md"])
	var k kit
	doc := goldmark.New(goldmark.WithExtensions(extension.GFM)).Parser().Parse(text.NewReader(readme))
	if err := ast.Walk(doc, func(n ast.Node, entering bool) (ast.WalkStatus, error) {
		if c, ok := n.(*ast.CodeSpan); ok && entering {
			var b strings.Builder
			for s := c.FirstChild(); s != nil; s = s.NextSibling() {
				if tx, ok := s.(*ast.Text); ok {
					b.Write(tx.Segment.Value(readme))
				}
			}
			k.spans = append(k.spans, b.String())
			return ast.WalkSkipChildren, nil
		}
		return ast.WalkContinue, nil
	}); err != nil {
		t.Fatal(err)
	}

	sh := testenv.LookPath(t, "sh")
	dir := t.TempDir()
	log := filepath.Join(dir, "commands")
	for _, p := range []string{"echoscu", "storescu"} {
		stub := "#!/bin/sh\n{ printf '%s\\n' \"${0##*/}\" \"$@\"; echo; } >> " + shellQuote(log) + "\n"
		if err := os.WriteFile(filepath.Join(dir, p), []byte(stub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_, block, ok := strings.Cut(files["README.md"], "## Verify with DCMTK")
	if ok {
		_, block, ok = strings.Cut(block, "```\n")
	}
	if ok {
		block, _, ok = strings.Cut(block, "```")
	}
	if !ok {
		t.Fatal("no verification block in the README")
	}
	for _, script := range []string{files["verify.sh"], block} {
		cmd := exec.Command(sh, "-c", script, "verify.sh", "test.dcm")
		cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	out, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range strings.Split(strings.TrimSuffix(string(out), "\n\n"), "\n\n") {
		k.verify = append(k.verify, strings.Split(c, "\n"))
	}
	return k
}
