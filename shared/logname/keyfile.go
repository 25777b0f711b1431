package logname

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// EnvKey is the environment variable that holds the deployment's key (in
// AWS, ECS injects it from Secrets Manager). It is never a flag: a flag's
// value shows in the process list.
const EnvKey = "DICOM_INGEST_LOG_KEY"

// SecretARNEnv is the environment variable that holds the ARN of the
// Secrets Manager secret with the key, for programs that read the secret
// themselves (the Lambda functions; ECS injects it into EnvKey instead).
const SecretARNEnv = "LOG_NAME_KEY_SECRET_ARN"

// KeyFile is the key's file in local mode's data directory.
const KeyFile = "log-name.key"

// FromEnv returns the Namer keyed by EnvKey, or nil, false when it is unset.
func FromEnv(getenv func(string) string) (*Namer, bool, error) {
	v := strings.TrimSpace(getenv(EnvKey))
	if v == "" {
		return nil, false, nil
	}
	n, err := New([]byte(v))
	if err != nil {
		return nil, true, fmt.Errorf("%s: %w", EnvKey, err)
	}
	return n, true, nil
}

// Load returns the Namer keyed by the file at path: its text without
// surrounding white space, so the same name can be computed by hand (see
// docs/operations/logging.md). A key file others may read is refused: with
// it, anyone could match names to known UIDs.
func Load(path string) (*Namer, error) {
	b, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	n, err := New([]byte(strings.TrimSpace(string(b))))
	if err != nil {
		return nil, fmt.Errorf("logname: key file %s: %w", path, err)
	}
	return n, nil
}

// LoadOrCreate is Load, creating the file first (64 random hex digits,
// mode 0600) if it does not exist.
func LoadOrCreate(path string) (*Namer, error) {
	n, err := Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createKeyFile(path); err != nil {
			return nil, err
		}
		return Load(path)
	}
	return n, err
}

func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("logname: key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("logname: key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("logname: key file %s is readable by others (mode %v); chmod 600 it", path, st.Mode().Perm())
	}
	b := make([]byte, 4096)
	n, err := f.Read(b)
	if err != nil {
		return nil, fmt.Errorf("logname: key file: read %s: %w", path, err)
	}
	return b[:n], nil
}

// createKeyFile writes a new key beside path and links it into place, so
// a concurrent or interrupted start never sees half a key; if another
// process won the race its key is kept.
func createKeyFile(path string) error {
	raw := make([]byte, MinKeyLen)
	if _, err := rand.Read(raw); err != nil {
		return fmt.Errorf("logname: new key: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("logname: new key: %w", err)
	}
	defer os.Remove(tmp.Name())
	// CreateTemp opens 0600 already; Chmod guards against a umask-less
	// platform default and documents the intent.
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("logname: new key: %w", err)
	}
	if _, err := tmp.WriteString(hex.EncodeToString(raw) + "\n"); err != nil {
		tmp.Close()
		return fmt.Errorf("logname: new key: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("logname: new key: sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("logname: new key: close %s: %w", tmp.Name(), err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("logname: new key: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("logname: sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("logname: sync %s: %w", dir, err)
	}
	return nil
}
