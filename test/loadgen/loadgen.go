package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
)

type options struct {
	Addr, CallingAE, CalledAE string
	Associations, Repeat      int
	Progress                  bool
	Label                     string
	Timings                   string // record each success's time (see -timings)
}

// file is one Part 10 file to send, with what its meta says.
type file struct {
	Path       string
	Size       int64
	SOPClass   string
	SOPInst    string
	TransferTS string
}

// scan finds the Part 10 files under the given paths; files that are not
// Part 10 are skipped (a corpus directory may hold scripts or markers).
func scan(paths []string) ([]file, error) {
	var out []file
	for _, root := range paths {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || !d.Type().IsRegular() {
				return nil
			}
			f, err := readFileMeta(path)
			if errors.Is(err, part10.ErrNotPart10) {
				return nil
			}
			if err != nil {
				return err
			}
			out = append(out, f)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("scan %s: %w", root, err)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no DICOM Part 10 files under %v", paths)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func readFileMeta(path string) (file, error) {
	f, err := os.Open(path)
	if err != nil {
		return file{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return file{}, err
	}
	m, err := part10.ReadMeta(bufio.NewReader(f))
	if err != nil {
		return file{}, fmt.Errorf("%s: %w", path, err)
	}
	return file{Path: path, Size: st.Size(), SOPClass: m.MediaStorageSOPClassUID, SOPInst: m.MediaStorageSOPInstanceUID, TransferTS: m.TransferSyntaxUID}, nil
}

// contexts proposes one presentation context per abstract syntax with every
// transfer syntax the files of that class use.
func contexts(files []file) []dicomnet.ProposedContext {
	byClass := map[string][]string{}
	var order []string
	for _, f := range files {
		if _, ok := byClass[f.SOPClass]; !ok {
			order = append(order, f.SOPClass)
		}
		if !slices.Contains(byClass[f.SOPClass], f.TransferTS) {
			byClass[f.SOPClass] = append(byClass[f.SOPClass], f.TransferTS)
		}
	}
	var out []dicomnet.ProposedContext
	for _, c := range order {
		// One context per transfer syntax: an SCP accepts only one syntax
		// per context, and every file must find its own.
		for _, ts := range byClass[c] {
			out = append(out, dicomnet.ProposedContext{AbstractSyntax: c, TransferSyntaxes: []string{ts}})
		}
	}
	return out
}

func run(ctx context.Context, o options, files []file) (Report, error) {
	if o.Associations < 1 {
		o.Associations = 1
	}
	if o.Repeat < 1 {
		o.Repeat = 1
	}
	cfg := dicomnet.ClientConfig{CallingAE: o.CallingAE, CalledAE: o.CalledAE, Contexts: contexts(files)}
	if len(cfg.Contexts) > 128 {
		return Report{}, fmt.Errorf("%d (SOP class, transfer syntax) pairs: more than the 128 presentation contexts one association can propose", len(cfg.Contexts))
	}
	total := len(files) * o.Repeat
	var totalBytes int64
	for _, f := range files {
		totalBytes += f.Size * int64(o.Repeat)
	}
	var bar *progressbar.ProgressBar
	if o.Progress {
		bar = progressbar.DefaultBytes(totalBytes, "sending")
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // releases the producer when every association failed
	work := make(chan file)
	go func() {
		defer close(work)
		for r := 0; r < o.Repeat; r++ {
			for _, f := range files {
				select {
				case work <- f:
				case <-ctx.Done():
					return
				}
			}
		}
	}()

	var (
		mu        sync.Mutex
		latencies = make([]time.Duration, 0, total)
		rep       = Report{Label: o.Label, Associations: o.Associations}
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		rep.Failed++
		if rep.FirstError == "" {
			rep.FirstError = err.Error()
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < o.Associations; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			as, err := dicomnet.Dial(ctx, o.Addr, cfg)
			if err != nil {
				// The other associations take this one's share of the work.
				fail(fmt.Errorf("associate: %w", err))
				return
			}
			defer func() {
				if err := as.Release(context.Background()); err != nil {
					fail(fmt.Errorf("release: %w", err))
				}
			}()
			for f := range work {
				t0 := time.Now()
				err := send(ctx, as, f)
				d := time.Since(t0)
				if err != nil {
					fail(fmt.Errorf("%s: %w", f.Path, err))
					continue
				}
				done := time.Now()
				mu.Lock()
				latencies = append(latencies, d)
				rep.Instances++
				rep.Bytes += f.Size
				if o.Timings != "" {
					rep.timings = fmt.Appendf(rep.timings, "%s\t%d\n", f.SOPInst, done.UnixNano())
				}
				mu.Unlock()
				if bar != nil {
					_ = bar.Add64(f.Size) // the bar only draws on stderr; a failed draw is no failed send
				}
			}
		}()
	}
	wg.Wait()
	rep.Elapsed = time.Since(start)
	rep.EndNs = time.Now().UnixNano()
	if bar != nil {
		_ = bar.Finish()
		fmt.Fprintln(os.Stderr)
	}
	if rep.Instances == 0 && rep.Failed == 0 {
		return rep, errors.New("nothing was sent")
	}
	rep.InstancesPS = float64(rep.Instances) / rep.Elapsed.Seconds()
	rep.MBPS = float64(rep.Bytes) / 1e6 / rep.Elapsed.Seconds()
	if len(latencies) > 0 {
		slices.Sort(latencies)
		rep.P50 = latencies[len(latencies)*50/100]
		rep.P99 = latencies[min(len(latencies)-1, len(latencies)*99/100)]
		rep.P50ms = float64(rep.P50.Microseconds()) / 1000
		rep.P99ms = float64(rep.P99.Microseconds()) / 1000
	}
	return rep, nil
}

// send streams one file's dataset, exactly as stored after its meta, as a
// C-STORE; memory stays at one read buffer whatever the file's size.
func send(ctx context.Context, as *dicomnet.ClientAssociation, f file) error {
	st, err := as.StoreFile(ctx, f.Path)
	if err != nil {
		return err
	}
	if st.IsFailure() {
		return fmt.Errorf("C-STORE status %04X %s", st.Code, st.Comment)
	}
	return nil
}
