package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
)

// load is what the sender sends: count instances at rate per second over
// associations, studySize instances a study, series of seriesSize, each
// image side×side 16-bit pixels.
type load struct {
	addr                  string
	rate                  float64
	count                 int
	associations          int
	studySize, seriesSize int
	side                  int
	uidRoot               string
}

// sent is one C-STORE's outcome.
type sent struct {
	study   int
	sop     string
	studyUI string
	ok      time.Time // C-STORE success arrived
	err     error
}

func (l load) uids(i int) (study int, studyUID, seriesUID, sopUID string) {
	study = i / l.studySize
	series := (i % l.studySize) / l.seriesSize
	studyUID = fmt.Sprintf("%s.%d", l.uidRoot, study+1)
	seriesUID = fmt.Sprintf("%s.%d", studyUID, series+1)
	sopUID = fmt.Sprintf("%s.%d", seriesUID, i%l.seriesSize+1)
	return
}

// dataset returns instance i's data set (no File Meta Information).
func (l load) dataset(i int) ([]byte, string, error) {
	study, studyUID, seriesUID, sopUID := l.uids(i)
	file := pt.Instance{
		StudyUID: studyUID, SeriesUID: seriesUID, SOPUID: sopUID,
		PatientID: fmt.Sprintf("CHAIN-%d", study+1), PatientName: fmt.Sprintf("Chain^Patient%d", study+1),
		Modality: "CT", Rows: l.side, Columns: l.side, SourceAE: "LOCAL_AE",
	}.Build()
	r := bufio.NewReader(bytes.NewReader(file))
	if _, err := part10.ReadMeta(r); err != nil {
		return nil, "", fmt.Errorf("chain: instance %d: %w", i, err)
	}
	ds, err := io.ReadAll(r)
	return ds, sopUID, err
}

// run sends the load open-loop: instance i is due at start + i/rate and
// goes on the first free association once due. It returns every
// C-STORE's outcome, in no particular order.
func (l load) run(ctx context.Context) ([]sent, time.Duration, error) {
	cfg := dicomnet.ClientConfig{CallingAE: "LOCAL_AE", CalledAE: "REMOTE_AE", Contexts: []dicomnet.ProposedContext{
		{AbstractSyntax: pt.CTStorage, TransferSyntaxes: []string{"1.2.840.10008.1.2.1"}},
	}}
	var (
		next    atomic.Int64
		mu      sync.Mutex
		results = make([]sent, 0, l.count)
		wg      sync.WaitGroup
		first   error
	)
	var assocs []*dicomnet.ClientAssociation
	for range l.associations {
		as, err := dicomnet.Dial(ctx, l.addr, cfg)
		if err != nil {
			for _, a := range assocs {
				a.Abort() // the run is over; only the error below matters
			}
			return nil, 0, fmt.Errorf("chain: associate: %w", err)
		}
		assocs = append(assocs, as)
	}
	start := time.Now()
	for _, as := range assocs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if err := as.Release(context.Background()); err != nil {
					mu.Lock()
					first = cmpErr(first, fmt.Errorf("chain: release: %w", err))
					mu.Unlock()
				}
			}()
			for {
				i := int(next.Add(1) - 1)
				if i >= l.count || ctx.Err() != nil {
					return
				}
				due := start.Add(time.Duration(float64(i) / l.rate * float64(time.Second)))
				if d := time.Until(due); d > 0 {
					time.Sleep(d)
				}
				study, studyUID, _, _ := l.uids(i)
				ds, sop, err := l.dataset(i)
				res := sent{study: study, sop: sop, studyUI: studyUID}
				if err == nil {
					st, serr := as.Store(ctx, pt.CTStorage, sop, "1.2.840.10008.1.2.1", bytes.NewReader(ds))
					if err = serr; err == nil && st.IsFailure() {
						err = fmt.Errorf("C-STORE status %04X %s", st.Code, st.Comment)
					}
				}
				res.ok, res.err = time.Now(), err
				mu.Lock()
				results = append(results, res)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return results, time.Since(start), first
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
