package onboarding

import (
	"bytes"
	"embed"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/dicom-ingest/dicom-ingest/docs"
)

//go:embed templates/*.tmpl
var templateFS embed.FS

// ConformanceFileName is the kit's copy of the DICOM conformance statement
// (docs/conformance.md of the build that made the kit).
const ConformanceFileName = "conformance.md"

// File is one generated file of a kit.
type File struct {
	Name string
	Mode os.FileMode
	Data []byte
}

var templates = template.Must(template.New("kit").Option("missingkey=error").Funcs(template.FuncMap{
	"join":            strings.Join,
	"sh":              shellJoin,
	"shq":             shellQuote,
	"shca":            shellJoinCAVar,
	"code":            codeSpan,
	"cell":            cellCodeSpan,
	"mul":             func(a, b int) int { return a * b },
	"add":             func(a, b int) int { return a + b },
	"bytes":           bytesText,
	"duration":        durationText,
	"per":             perText,
	"secretsFile":     func() string { return SecretsFileName },
	"conformanceFile": func() string { return ConformanceFileName },
	// portsText lists the DICOM ports the site sends to: the plain port (p)
	// when it is open and the site may use it (a site bound to its
	// certificate is refused there), the TLS port when there is one.
	"portsText": func(k *Kit, p int) string {
		var ports []string
		if k.PlainUsable() {
			ports = append(ports, fmt.Sprint(p))
		}
		if k.TLS != nil {
			ports = append(ports, fmt.Sprint(k.TLS.Port))
		}
		return strings.Join(ports, " and ")
	},
	"tlsFile": func(name string) string {
		return map[string]string{"ca": ServerCAFileName, "csr": CSRScriptName, "key": SiteKeyFile, "cert": SiteCertFile}[name]
	},
	"psk": func(t Tunnel) string {
		if t.psk == "" {
			return fmt.Sprintf("REPLACE_WITH_TUNNEL%d_PSK", t.Number)
		}
		return t.psk
	},
}).ParseFS(templateFS, "templates/*.tmpl"))

// Render produces the kit's files, in a fixed order. Its output depends only
// on the kit (no timestamps), so it can be compared with golden files.
func (k *Kit) Render() ([]File, error) {
	type spec struct {
		tmpl, name string
		mode       os.FileMode
	}
	specs := []spec{
		{"README.md.tmpl", "README.md", 0o644},
		{"swanctl.conf.tmpl", "swanctl.conf", 0o644},
		{"swanctl-secrets.conf.tmpl", SecretsFileName, 0o600},
		{"verify.sh.tmpl", "verify.sh", 0o755},
	}
	if k.Routing == RouteBased {
		specs = append(specs, spec{"xfrm-interfaces.sh.tmpl", "xfrm-interfaces.sh", 0o755})
	}
	if k.TLS != nil {
		specs = append(specs, spec{"site-csr.sh.tmpl", CSRScriptName, 0o755})
	}
	files := make([]File, 0, len(specs))
	for _, s := range specs {
		var buf bytes.Buffer
		if err := templates.ExecuteTemplate(&buf, s.tmpl, k); err != nil {
			return nil, fmt.Errorf("render %s: %w", s.name, err)
		}
		files = append(files, File{Name: s.name, Mode: s.mode, Data: buf.Bytes()})
	}
	if k.TLS != nil {
		files = append(files, File{Name: ServerCAFileName, Mode: 0o644, Data: []byte(k.TLS.ServerCAPEM)})
	}
	files = append(files, File{Name: ConformanceFileName, Mode: 0o644, Data: docs.Conformance})
	return files, nil
}

// WriteDir renders the kit into dir, creating it if needed. Existing kit files
// are replaced; the secrets file is written with mode 0600.
func (k *Kit) WriteDir(dir string) ([]File, error) {
	files, err := k.Render()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("write kit: %w", err)
	}
	for _, f := range files {
		p := filepath.Join(dir, f.Name)
		// Remove first so a pre-existing file's wider mode is not kept.
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return nil, fmt.Errorf("write kit: %w", err)
		}
		if err := os.WriteFile(p, f.Data, f.Mode); err != nil {
			return nil, fmt.Errorf("write kit: %w", err)
		}
	}
	return files, nil
}

// shellJoin quotes args for a POSIX shell where needed.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

// shellJoinCAVar is shellJoin for verify.sh's TLS commands: the server CA
// they trust (+cf server-ca.pem) is the script's $ca, which finds the kit's
// copy when the current directory has none (a renewed pair's directory).
func shellJoinCAVar(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if i > 0 && args[i-1] == "+cf" && a == ServerCAFileName {
			q[i] = `"$ca"`
			continue
		}
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !((r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') || strings.ContainsRune("-_./:=@,+", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// codeSpan writes s as a Markdown code span (CommonMark) whatever it holds: delimited by a run of backticks longer
// than any in s, padded with a space on each side when s starts or ends with a backtick or a space (a code span
// drops one of each). An AE title may hold a backtick, which would end a span of one.
func codeSpan(s string) string {
	longest, run := 0, 0
	for _, r := range s {
		if r == '`' {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	fence := strings.Repeat("`", longest+1)
	if strings.HasPrefix(s, "`") || strings.HasSuffix(s, "`") || (strings.HasPrefix(s, " ") && strings.HasSuffix(s, " ")) {
		s = " " + s + " "
	}
	return fence + s + fence
}

// cellCodeSpan is codeSpan for a cell of a Markdown table (GFM), where a | ends the cell even inside a code span
// unless it is escaped, \|, which the table takes out before the span is read. codeSpan is not: outside a table
// the backslash would show.
func cellCodeSpan(s string) string {
	return strings.ReplaceAll(codeSpan(s), "|", `\|`)
}

// bytesText writes a size (not negative) for a person: 262,144 bytes.
func bytesText(n int64) string {
	digits := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, r := range digits {
		if i > 0 && (len(digits)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if n == 1 {
		return b.String() + " byte"
	}
	return b.String() + " bytes"
}

// durationText writes a duration for a person in its largest whole unit:
// 5 minutes, 1 hour, 90 seconds; a fraction of a second as Go writes it.
func durationText(d time.Duration) string {
	for _, u := range []struct {
		d    time.Duration
		name string
	}{{time.Hour, "hour"}, {time.Minute, "minute"}, {time.Second, "second"}} {
		if d >= u.d && d%u.d == 0 {
			if n := int64(d / u.d); n != 1 {
				return fmt.Sprintf("%d %ss", n, u.name)
			}
			return "1 " + u.name
		}
	}
	return d.String()
}

// perText writes "in every d" for a person: a minute, an hour, every 90
// seconds.
func perText(d time.Duration) string {
	switch t := durationText(d); t {
	case "1 hour":
		return "an hour"
	case "1 minute", "1 second":
		return "a " + strings.TrimPrefix(t, "1 ")
	default:
		return "every " + t
	}
}
