// Command logname goes from the object names in logs back to the objects:
// it reads object keys, one a line, and prints each key's name under the
// deployment's log-name key ("<name> <key>"), or with -find only the keys
// whose names it was given. Whoever runs it needs the key and a listing of
// the keys, which only the deployment's operators may read (see
// docs/operations/logging.md).
//
//	aws s3api list-objects-v2 --bucket B --prefix incoming/ --query 'Contents[].Key' --output text | tr '\t' '\n' |
//	  DICOM_INGEST_LOG_KEY=… logname -find obj-0123456789abcdef0123
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/dicom-ingest/dicom-ingest/shared/cli"
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
)

func main() {
	cli.Main("logname", func(args []string, stdout, _ io.Writer) error {
		return run(args, os.Getenv, os.Stdin, stdout)
	})
}

func run(args []string, getenv func(string) string, in io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet("logname", flag.ContinueOnError)
	keyFile := fs.String("key-file", "", "file holding the log-name key (local mode: DATA_DIR/"+logname.KeyFile+"); default: env "+logname.EnvKey)
	find := fs.String("find", "", "comma-separated names to look for (obj-…); default: print every key's name")
	if err := cli.Parse(fs, args, out); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.UsageError(fs, fmt.Errorf("unexpected argument %q: keys are read from standard input", fs.Arg(0)))
	}
	names, err := namer(*keyFile, getenv)
	if err != nil {
		return err
	}
	wanted := map[string]bool{}
	for _, n := range strings.Split(*find, ",") {
		if n = strings.TrimSpace(n); n != "" {
			wanted[n] = true
		}
	}
	w := bufio.NewWriter(out)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	found := 0
	for sc.Scan() {
		key := strings.TrimSpace(sc.Text())
		if key == "" {
			continue
		}
		name := names.Name(key)
		if len(wanted) > 0 && !wanted[name] {
			continue
		}
		found++
		if _, err := fmt.Fprintln(w, name, key); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read keys: %w", err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if len(wanted) > 0 && found < len(wanted) {
		return fmt.Errorf("found %d of the %d names among the keys read", found, len(wanted))
	}
	return nil
}

// namer reads the key from -key-file or the environment, never from a flag:
// a flag's value shows in the process list.
func namer(keyFile string, getenv func(string) string) (*logname.Namer, error) {
	if keyFile != "" {
		return logname.Load(keyFile)
	}
	n, ok, err := logname.FromEnv(getenv)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("no key: set %s or pass -key-file", logname.EnvKey)
	}
	return n, nil
}
