package logleak

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
)

// Objects are the files a log test sends, one set per path through the
// system. Every study has its own distinctive UID component and its own
// patient, so a leak names the path it came from.
type Objects struct {
	// Study is a valid study of two series, three instances.
	Study []string
	// Invalid lacks Modality (a type 1 attribute): quarantined.
	Invalid string
	// Conflict carries Study[0]'s UIDs with other content: kept beside it.
	Conflict string
	// MalformedLate has an element without a VR after its UIDs: the SCP
	// refuses it once it has read them; put where a store would (Key), it
	// reaches the pipeline, which quarantines it as malformed.
	MalformedLate string
	// MalformedEarly has one before its UIDs: the SCP refuses it. Send
	// both with StoreRaw.
	MalformedEarly string
	// Blocked and Stalled are studies of their own, for a test to make
	// their store (Blocked) or their processing (Stalled) fail.
	Blocked, Stalled string
	// Large is over 5 MiB: a multipart upload in S3 (the smallest part).
	Large string

	// StudyUID of each file above.
	StudyUID map[string]string
	uids     map[string][3]string // study, series, SOP Instance UID
}

// Key is the store key of the file at path received at at.
func (o Objects) Key(path string, at time.Time) string {
	u := o.uids[path]
	return "incoming/" + at.UTC().Format("2006/01/02") + "/" + u[0] + "/" + u[1] + "/" + u[2] + ".dcm"
}

// Root is the UID root of every synthesized object (a root for examples).
const Root = "1.2.826.0.1.3680043.10.543."

// UID returns the UID of study n (n < 100) and, with more numbers, of its
// series and instances: each study gets a distinctive ten-digit component.
func UID(study int, more ...int) string {
	u := fmt.Sprintf("%s%d.%d", Root, 7391820400+study, study)
	for _, m := range more {
		u += fmt.Sprintf(".%d", m)
	}
	return u
}

type patient struct{ name, id, charset string }

var patients = []patient{
	{"Roentgen^Wilhelm^Conrad", "LL-PID-58213", ""},
	{"Curie^Marie", "LL-PID-58214", ""},
	{"Meitner^Lise", "LL-PID-58215", ""},
	{"Hounsfield^Godfrey", "LL-PID-58216", ""},
	{"Ångström^Anders", "LL-PID-58217", "ISO_IR 192"},
	{"Cormack^Allan", "LL-PID-58218", ""},
	{"Lauterbur^Paul", "LL-PID-58219", ""},
}

// WriteObjects writes the objects into dir and adds their identifiers
// (and the birth date and the identifying values every one carries) to
// ids.
func WriteObjects(t testing.TB, dir string, ids *Identifiers) Objects {
	t.Helper()
	o := Objects{StudyUID: map[string]string{}, uids: map[string][3]string{}}
	write := func(name string, study int, in pt.Instance) string {
		t.Helper()
		p := patients[study%len(patients)]
		in.StudyUID, in.PatientName, in.PatientID, in.CharacterSet = UID(study), p.name, p.id, p.charset
		in.SourceAE = "LOCAL_AE"
		in.Extra = append(identifyingElems(), in.Extra...) // the caller's replace them
		if in.Rows == 0 {
			in.Rows, in.Columns = 8, 8
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, in.Build(), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, u := range []string{in.StudyUID, in.SeriesUID, in.SOPUID} {
			ids.AddUID(u)
		}
		ids.AddName(p.name)
		ids.AddID("patient id", p.id)
		o.StudyUID[path] = in.StudyUID
		o.uids[path] = [3]string{in.StudyUID, in.SeriesUID, in.SOPUID}
		return path
	}
	ids.AddID("birth date", "19700101") // pipelinetest's for every instance
	ids.addIdentifying()
	for i, s := range [][2]int{{1, 1}, {1, 2}, {2, 1}} {
		o.Study = append(o.Study, write(fmt.Sprintf("study-%d.dcm", i), 1,
			pt.Instance{SeriesUID: UID(1, s[0]), SOPUID: UID(1, s[0], s[1])}))
	}
	o.Conflict = write("conflict.dcm", 1, pt.Instance{SeriesUID: UID(1, 1), SOPUID: UID(1, 1, 1), Rows: 10, Columns: 10})
	o.Invalid = write("invalid.dcm", 2, pt.Instance{SeriesUID: UID(2, 1), SOPUID: UID(2, 1, 1), Drop: []uint32{pt.Tag(0x08, 0x60)}})
	o.MalformedLate = write("malformed-late.dcm", 3, pt.Instance{SeriesUID: UID(3, 1), SOPUID: UID(3, 1, 1),
		Extra: []pt.Elem{pt.Raw(pt.Tag(0x28, 0x0002), "\x00\x00", []byte{1, 0})}})
	o.MalformedEarly = write("malformed-early.dcm", 4, pt.Instance{SeriesUID: UID(4, 1), SOPUID: UID(4, 1, 1),
		Extra: []pt.Elem{pt.Raw(pt.Tag(0x08, 0x0008), "\x00\x00", []byte{1, 0})}})
	o.Blocked = write("blocked.dcm", 5, pt.Instance{SeriesUID: UID(5, 1), SOPUID: UID(5, 1, 1)})
	o.Stalled = write("stalled.dcm", 6, pt.Instance{SeriesUID: UID(6, 1), SOPUID: UID(6, 1, 1)})
	o.Large = write("large.dcm", 7, pt.Instance{SeriesUID: UID(7, 1), SOPUID: UID(7, 1, 1), Rows: 1700, Columns: 1700})
	return o
}

// StoreRaw sends files over one association as they are (dcmsend would
// parse and re-encode them, and refuses malformed ones) and returns each
// one's status or error.
func StoreRaw(t testing.TB, addr string, files ...string) []error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, err := dicomnet.Dial(ctx, addr, dicomnet.ClientConfig{
		CallingAE: "LOCAL_AE", CalledAE: "REMOTE_AE",
		Contexts: dicomnet.StorageContexts([]string{pt.CTStorage}, "1.2.840.10008.1.2.1"),
	})
	if err != nil {
		t.Fatalf("associate with %s: %v", addr, err)
	}
	var out []error
	for _, f := range files {
		st, err := a.StoreFile(ctx, f)
		if err == nil && !st.IsSuccess() && !st.IsWarning() {
			err = st
		}
		out = append(out, err)
	}
	if err := a.Release(ctx); err != nil {
		t.Errorf("release: %v", err)
	}
	return out
}
