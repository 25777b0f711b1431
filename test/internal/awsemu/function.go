package awsemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// Function is one function binary running under its own runtime interface
// emulator, which serves one invocation at a time as one Lambda execution
// environment does.
type Function struct {
	Name string
	// URL invokes the function (POST the event, read the result).
	URL  string
	proc *Process
}

// StartFunction runs the function binary bootstrap under rie with env, as
// name, and returns once it accepts invocations. The function's output
// (its logs) goes to logs, from one goroutine at a time.
func StartFunction(rie, name, bootstrap string, env []string, logs io.Writer) (*Function, error) {
	var err error
	// Tried again on other ports when the emulator ends before it listens (its port bound meanwhile by another
	// test's process); a loaded machine gets half a minute to start it.
	for range functionStartTries {
		var f *Function
		if f, err = startFunction(rie, name, bootstrap, env, logs); !errors.Is(err, errExited) {
			return f, err
		}
	}
	return nil, err
}

// functionStartTries bounds StartFunction's tries on other ports.
const functionStartTries = 3

func startFunction(rie, name, bootstrap string, env []string, logs io.Writer) (*Function, error) {
	addr, err := testenv.PickFreeAddr()
	if err != nil {
		return nil, err
	}
	api, err := testenv.PickFreeAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(rie, "--runtime-interface-emulator-address", addr, "--runtime-api-address", api, "--log-level", "error", bootstrap)
	cmd.Dir = filepath.Dir(bootstrap)
	cmd.Env = env
	// One writer for both: exec.Cmd then copies from one goroutine.
	cmd.Stdout, cmd.Stderr = logs, logs
	proc, err := startProcess(cmd)
	if err != nil {
		return nil, fmt.Errorf("awsemu: start rie for %s: %w", name, err)
	}
	f := &Function{Name: name, URL: "http://" + addr + "/2015-03-31/functions/function/invocations", proc: proc}
	if err := proc.waitListening(addr, 30*time.Second); err != nil {
		f.Stop()
		return nil, fmt.Errorf("awsemu: rie for %s: %w", name, err)
	}
	return f, nil
}

// Stop stops the emulator and the function.
func (f *Function) Stop() { f.proc.Stop() }

// Invoke calls the function with payload and decodes its result into out
// (unless nil). A function error is an error.
func (f *Function) Invoke(ctx context.Context, payload any, out any) error {
	body, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("awsemu: invoke %s: %w", f.Name, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("awsemu: invoke %s: %w", f.Name, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("awsemu: invoke %s: %w", f.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("awsemu: invoke %s: read result: %w", f.Name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("awsemu: invoke %s: %s: %s", f.Name, resp.Status, b)
	}
	if strings.Contains(string(b), `"errorType"`) {
		return fmt.Errorf("awsemu: invoke %s: function error: %s", f.Name, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("awsemu: invoke %s: result %s: %w", f.Name, b, err)
		}
	}
	return nil
}
