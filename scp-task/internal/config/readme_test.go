package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestREADMEListsEverySetting keeps the README's configuration table in
// step with the flags: a setting added here must be documented there.
func TestREADMEListsEverySetting(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, s := range Settings() {
		row := "| `--" + s.Flag + "` | `" + s.Env + "` |"
		if !strings.Contains(readme, row) {
			t.Errorf("README.md has no configuration row starting %q", row)
		}
	}
}
