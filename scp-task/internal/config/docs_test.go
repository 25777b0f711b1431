package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
