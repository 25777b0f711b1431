// Command bench-startup measures how long scp-task --local takes to start
// on a data directory that already holds many processed objects: from the
// process's start until the portal answers /healthz and the DICOM port
// accepts connections. Start-up must not grow with the archive (the
// hand-off is recovered from its queue, never by listing the store), so
// the time on 100,000 objects should stay under 2 s.
//
// The first run fills DIR: it starts scp-task, sends N small CT objects
// (100 per study) over 8 associations, waits for the pipeline to process
// them all and stops it; a marker file records that DIR holds N. Later
// runs only measure. It prints one JSON line per measured start.
//
//	bench-startup -scp bin/scp-task -data /var/tmp/startup-100k -n 100000 -rounds 3
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/cli"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

type report struct {
	Label    string  `json:"label"`
	Objects  int     `json:"objects"`
	PortalMs float64 `json:"portalMs"`
	DICOMMs  float64 `json:"dicomMs"`
	ReadyMs  float64 `json:"readyMs"`
}

const command = "bench-startup"

func main() { cli.Main(command, runCommand) }

// runCommand is main without the process: flags in, reports out.
func runCommand(args []string, stdout, _ io.Writer) error {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	cli.Synopsis(fs, command+" -data DIR [-scp BIN] [-n N] [-rounds R]")
	scp := fs.String("scp", "bin/scp-task", "the scp-task binary")
	data := fs.String("data", "", "data directory (filled on the first run)")
	n := fs.Int("n", 100000, "objects the data directory holds")
	rounds := fs.Int("rounds", 3, "starts to measure")
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	switch {
	case *data == "":
		return cli.UsageError(fs, errors.New("-data is required"))
	}
	if err := cli.FlagsOnly(fs); err != nil {
		return err
	}
	return run(*scp, *data, *n, *rounds)
}

func run(scp, data string, n, rounds int) error {
	marker := filepath.Clean(data) + ".filled-" + strconv.Itoa(n)
	if _, err := os.Stat(marker); errors.Is(err, os.ErrNotExist) {
		if err := os.RemoveAll(data); err != nil {
			return err
		}
		if err := fill(scp, data, n); err != nil {
			return fmt.Errorf("fill %s: %w", data, err)
		}
		if err := os.WriteFile(marker, nil, 0o644); err != nil {
			return err
		}
	}
	for range rounds {
		r, err := measure(scp, data)
		if err != nil {
			return err
		}
		r.Label, r.Objects = "startup "+strconv.Itoa(n), n
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		fmt.Println(string(b))
	}
	return nil
}

// node is one scp-task --local process on free ports.
type node struct {
	cmd           *exec.Cmd
	dicom, portal string
	started       time.Time
	exited        chan error
}

func start(scp, data string) (*node, error) {
	var addrs [3]string
	for i := range addrs {
		a, err := testenv.PickFreeAddr()
		if err != nil {
			return nil, err
		}
		addrs[i] = a
	}
	nd := &node{dicom: addrs[0], portal: addrs[1], exited: make(chan error, 1)}
	nd.cmd = exec.Command(scp, "--local", "--data-dir", data, "--listen", addrs[0], "--portal-listen", addrs[1],
		"--health-listen", addrs[2], "--calling-aes", "LOCAL_AE", "--max-associations-per-ae", "64", "--quiet-period", "1h", "--log-level", "warn")
	nd.cmd.Stderr = os.Stderr
	nd.started = time.Now()
	if err := nd.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { nd.exited <- nd.cmd.Wait() }()
	return nd, nil
}

func (nd *node) stop() error {
	if err := nd.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case err := <-nd.exited:
		return err
	case <-time.After(2 * time.Minute):
		return errors.New("scp-task did not stop")
	}
}

// measure starts scp-task and times the portal's first /healthz answer
// and the DICOM port's first accepted connection.
func measure(scp, data string) (report, error) {
	nd, err := start(scp, data)
	if err != nil {
		return report{}, err
	}
	var r report
	client := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(time.Minute); r.PortalMs == 0 || r.DICOMMs == 0; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			return r, errors.Join(errors.New("scp-task did not come up in a minute"), nd.stop())
		}
		select {
		case err := <-nd.exited:
			return r, fmt.Errorf("scp-task exited during start: %v", err)
		default:
		}
		since := float64(time.Since(nd.started).Microseconds()) / 1000
		if r.PortalMs == 0 {
			if resp, err := client.Get("http://" + nd.portal + "/healthz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					r.PortalMs = since
				}
			}
		}
		if r.DICOMMs == 0 {
			if c, err := net.DialTimeout("tcp", nd.dicom, time.Second); err == nil {
				c.Close()
				r.DICOMMs = since
			}
		}
	}
	r.ReadyMs = max(r.PortalMs, r.DICOMMs)
	return r, nd.stop()
}

// fill sends n objects and waits until the pipeline has processed them.
func fill(scp, data string, n int) error {
	nd, err := start(scp, data)
	if err != nil {
		return err
	}
	defer func() {
		if err := nd.stop(); err != nil {
			cli.Notef(os.Stderr, command, "stop: %v", err)
		}
	}()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", nd.dicom); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return errors.New("scp-task did not come up")
		}
	}
	const associations = 8
	work := make(chan int)
	errs := make(chan error, associations)
	var wg sync.WaitGroup
	cfg := dicomnet.ClientConfig{CallingAE: "LOCAL_AE", CalledAE: "REMOTE_AE",
		Contexts: []dicomnet.ProposedContext{{AbstractSyntax: pipelinetest.CTStorage, TransferSyntaxes: []string{"1.2.840.10008.1.2.1"}}}}
	for range associations {
		wg.Add(1)
		go func() {
			defer wg.Done()
			as, err := dicomnet.Dial(context.Background(), nd.dicom, cfg)
			if err != nil {
				errs <- err
				return
			}
			defer func() {
				if err := as.Release(context.Background()); err != nil {
					errs <- err
				}
			}()
			for i := range work {
				study := fmt.Sprintf("1.2.826.0.1.3680043.10.544.%d", i/100+1)
				in := pipelinetest.Instance{StudyUID: study, SeriesUID: study + ".1", SOPUID: fmt.Sprintf("%s.1.%d", study, i%100+1),
					PatientID: fmt.Sprint("BENCH-", i/100), PatientName: "Bench^Startup", Rows: 16, Columns: 16, SourceAE: "LOCAL_AE"}
				br := bufio.NewReader(bytes.NewReader(in.Build()))
				if _, err := part10.ReadMeta(br); err != nil {
					errs <- err
					return
				}
				st, err := as.Store(context.Background(), pipelinetest.CTStorage, in.SOPUID, "1.2.840.10008.1.2.1", br)
				if err != nil || st.IsFailure() {
					errs <- fmt.Errorf("store %d: %v %v", i, st, err)
					return
				}
			}
		}()
	}
	t0 := time.Now()
	for i := range n {
		select {
		case work <- i:
		case err := <-errs:
			close(work)
			return err
		}
		if i%10000 == 0 && i > 0 {
			cli.Notef(os.Stderr, command, "%d objects sent (%.0f/s)", i, float64(i)/time.Since(t0).Seconds())
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	for {
		var c struct {
			PendingPipeline int64 `json:"pendingPipeline"`
		}
		resp, err := http.Get("http://" + nd.portal + "/api/counters")
		if err != nil {
			return err
		}
		err = json.NewDecoder(resp.Body).Decode(&c)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if c.PendingPipeline == 0 {
			return nil
		}
		time.Sleep(time.Second)
	}
}
