package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/durations"
)

// TestConfigurationDocListsEverySetting keeps docs/configuration.md's flags
// table in step with the flags: a setting added here must be documented
// there, with its environment variable and its default.
func TestConfigurationDocListsEverySetting(t *testing.T) {
	path := filepath.Join("..", "..", "..", "docs", "configuration.md")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, s := range Settings() {
		def := "—"
		if s.Default != "" {
			def = "`" + s.Default + "`"
		}
		row := "| `--" + s.Flag + "` | `" + s.Env + "` | " + def + " |"
		if !strings.Contains(doc, row) {
			t.Errorf("%s has no configuration row starting %q", path, row)
		}
	}
}

// TestConformanceStatementDefaults: the defaults conformance.md's
// configuration tables (3.4.2) give a PACS administrator are the flags'.
// Each row names its flags in its Setting cell; its Default cell begins
// with what they default to, written as the statement writes it. So are
// the defaults its prose and its AE table (3.4.1) state again.
func TestConformanceStatementDefaults(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "conformance.md"))
	if err != nil {
		t.Fatal(err)
	}
	def := map[string]string{}
	for _, s := range Settings() {
		def[s.Flag] = s.Default
	}
	prose := func(flag string) string {
		d, err := time.ParseDuration(def[flag])
		if err != nil {
			t.Fatalf("--%s's default %q: %v", flag, def[flag], err)
		}
		return durations.Prose(d)
	}
	yesNo := func(flag string) string {
		if def[flag] == "true" {
			return "yes"
		}
		return "no" // false, or an empty list
	}
	for _, tc := range []struct {
		row   string   // how the row's first cell begins
		flags []string // the flags its Setting cell names
		want  string   // how its Default cell begins
	}{
		{"Local AE title", []string{"ae-title"}, "`" + def["ae-title"] + "`"},
		{"Listening port", []string{"listen"}, strings.TrimPrefix(def["listen"], ":") + " "},
		{"TLS listening port", []string{"tls-listen", "tls-cert", "tls-key", "tls-client-ca", "tls-client-crl"}, map[bool]string{true: "none "}[def["tls-listen"] == ""]},
		{"Remote AE titles", []string{"calling-aes"}, "`" + def["calling-aes"] + "`, from any address"},
		{"Maximum PDU size received", []string{"max-pdu-length"}, thousands(def["max-pdu-length"]) + " bytes"},
		{"Concurrent associations, in all and per calling AE title", []string{"max-associations", "max-associations-per-ae"}, def["max-associations"] + ", " + def["max-associations-per-ae"]},
		{"Concurrent associations accepted, in all", []string{"max-associations"}, def["max-associations"]},
		{"Concurrent associations per calling AE title", []string{"max-associations-per-ae"}, def["max-associations-per-ae"]},
		{"Retired Explicit VR Big Endian", []string{"accept-big-endian"}, yesNo("accept-big-endian")},
		{"PROXY protocol v2", []string{"proxy-protocol"}, yesNo("proxy-protocol") + " "},
		{"Storage Commitment report addresses", []string{"commitment-peers"}, map[bool]string{true: "none: requests refused `0124`"}[def["commitment-peers"] == ""]},
		{"Storage Commitment wait", []string{"commitment-wait", "commitment-report-for"}, prose("commitment-wait") + ", " + prose("commitment-report-for")},
		{"Quarantined instances", []string{"commitment-quarantined-committed"}, yesNo("commitment-quarantined-committed")},
		{"Idle", []string{"idle-timeout"}, prose("idle-timeout")},
		{"Progress", []string{"progress-window", "min-progress-bytes"}, prose("progress-window") + ", " + thousands(def["min-progress-bytes"]) + " bytes"},
		{"One whole message", []string{"max-message-time"}, prose("max-message-time")},
		{"Drain at shutdown", []string{"drain-timeout"}, prose("drain-timeout") + " "},
	} {
		t.Run(tc.row, func(t *testing.T) {
			rows := tableRows(string(b), tc.row)
			if len(rows) == 0 {
				t.Fatalf("conformance.md has no table row %q with Setting and Default columns", tc.row)
			}
			for _, r := range rows {
				for _, f := range tc.flags {
					if _, ok := def[f]; !ok {
						t.Errorf("--%s is no flag", f)
					}
					if !strings.Contains(r.setting, "`--"+f+"`") && !strings.Contains(r.setting, "`--"+f+" ") {
						t.Errorf("conformance.md's row %q does not name `--%s`: %q", tc.row, f, r.setting)
					}
				}
				if tc.want == "" || !strings.HasPrefix(r.def+" ", tc.want) {
					t.Errorf("conformance.md's row %q gives the default %q, the flags' is %q", tc.row, r.def, tc.want)
				}
			}
		})
	}
	// The prose and the AE table (3.4.1) state some of them again.
	port := strings.TrimPrefix(def["listen"], ":")
	doc := strings.Join(strings.Fields(string(b)), " ")
	for _, says := range []string{
		"(`--ae-title`, default `" + def["ae-title"] + "`)",
		"listens on a TCP port (default " + port + ";",
		"once no new instance arrived for the quiet period (default " + prose("quiet-period") + ")",
		"(`--commitment-wait`, default " + prose("commitment-wait") + ";",
		"(`--commitment-report-for`, default " + prose("commitment-report-for") + ";",
		"| `" + def["ae-title"] + "` (`--ae-title` / `SCP_AE_TITLE`; in AWS `dicom.aeTitle`) | " + port + " plain,",
	} {
		if !strings.Contains(doc, says) {
			t.Errorf("conformance.md does not say %q (the flags' defaults)", says)
		}
	}
}

// tableRows finds the rows whose first cell begins with first in the
// tables of doc with a Setting and a Default column, and returns those
// cells.
func tableRows(doc, first string) []struct{ setting, def string } {
	var out []struct{ setting, def string }
	setting, def := -1, -1
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(l, "|") {
			setting, def = -1, -1
			continue
		}
		// An escaped \| stays in its cell.
		cells := strings.Split(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(strings.ReplaceAll(l, `\|`, "\x00")), "|"), "|"), "|")
		for i := range cells {
			cells[i] = strings.ReplaceAll(strings.TrimSpace(cells[i]), "\x00", "|")
		}
		if setting < 0 && def < 0 {
			for i, c := range cells {
				switch c {
				case "Setting":
					setting = i
				case "Default":
					def = i
				}
			}
			if setting < 0 || def < 0 {
				setting, def = len(cells), len(cells) // a table without them: skip its rows
			}
			continue
		}
		if strings.HasPrefix(cells[0], first) && setting < len(cells) && def < len(cells) {
			out = append(out, struct{ setting, def string }{cells[setting], cells[def]})
		}
	}
	return out
}

// thousands writes a decimal as the statement does: 262,144.
func thousands(s string) string {
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
