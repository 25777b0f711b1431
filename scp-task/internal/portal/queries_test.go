package portal

import (
	"context"
	"encoding/json"
	"fmt"
	"image/color"
	"image/png"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/thumbnail"
	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestBadRequests: filters and cursors the user got wrong answer 400 with
// a message (the API) or show it (the pages, 400 too), never 500; time bounds
// beyond what nanoseconds since 1970 hold select what they say.
func TestBadRequests(t *testing.T) {
	srv, _ := newTestServer(t)
	tests := []struct {
		path string
		code int
		want string
	}{
		{"/api/audit?cursor=not-a-cursor", 400, "portal: cursor is the next value"},
		{"/api/audit?cursor=1.0", 400, "portal: cursor is the next value"},
		{"/api/audit?from=0001-01-01&to=9999-12-31", 200, `"id": "1"`},
		{"/api/audit?to=1500-01-01", 200, `"records": []`},
		{"/api/audit?from=3000-01-01", 200, `"records": []`},
		{"/api/audit?from=yesterday", 400, "is a time: RFC 3339 or yyyy-mm-dd"},
		{"/api/quarantine?cursor=x", 400, "portal: cursor is the next value"},
		{"/api/studies?cursor=x", 400, "portal: cursor is the next value"},
		{"/api/studies?status=lost", 400, "status is receiving, stable or has rejects"},
		{"/api/studies?from=2024-13", 400, "yyyy-mm-dd"},
		{"/api/studies?from=2020-13-45", 400, "yyyy-mm-dd"},
		{"/api/studies?patient=" + strings.Join(strings.Fields("a b c d e f g h i j k l m n o p q"), "+"), 400, "at most 16 words"},
		{"/api/studies?patient=" + strings.Repeat("w+", 993), 200, `"studies"`},
		{"/api/events?before=x", 400, "portal: before is the next value of a previous page"},
		{"/api/events?before=4", 400, "portal: before is the next value of a previous page"},
		{"/api/events?type=study-received", 400, "portal: type is one or more of Instance Stored, "},
		{"/api/events?type=Study+Received,Study+Udpated", 400, `\"Study Udpated\" is not one`},
		{"/api/events?before=1&after=1", 400, "portal: before and after are two directions: give one"},
		{"/api/events?before=3&after=0", 400, "portal: before and after are two directions: give one"},
		{"/api/events?after=-1", 400, "portal: after is an event's seq, as the next value of a page gives it, or 0 for the first event on"},
		{"/api/events?after=99999", 400, "portal: after 99999 is past the last event's seq"},
		{"/api/events?after=99999&type=Study+Received", 400, "tail it from after=0"},
		{"/events?after=99999", 400, "after 99999 is past the last event"},
		{"/api/audit?day=2026-13-01", 400, "yyyy-mm-dd"},
		{"/api/studies?limit=1001", 200, `"studies"`},
		{"/api/events?since=soon", 400, "is a time: RFC 3339 or yyyy-mm-dd"},
		{"/api/events?since=0001-01-01&until=9999-12-31", 200, `"id": "e1"`},
		{"/api/events?until=1500-01-01", 200, `"events": []`},
		{"/api/events?since=3000-01-01", 200, `"events": []`},
		{"/api/audit/associations?cursor=x", 400, "portal: cursor is the next value"},
		{"/api/audit/associations/none", 404, "not found"},
		{"/api/commitments?outcome=maybe", 400, "outcome is success or failure"},
		{"/api/commitments?limit=ten", 400, "limit is a number"},
		{"/api/commitments?limit=-1", 400, "limit is a number"},
		{"/api/commitments?limit=99999999999999999999", 200, `"commitments"`},
		{"/api/commitments?cursor=x", 400, "portal: cursor is the next value"},
		{"/commitments?outcome=maybe", 400, "outcome is success or failure"},
		{"/commitments?cursor=x", 400, "portal: cursor is the next value"},
		{"/audit/records?cursor=x", 400, "portal: cursor is the next value"},
		{"/events?before=x", 400, "portal: before is the next value of a previous page"},
		{"/?status=lost", 400, "status is receiving, stable or has rejects"},
		{"/?patient=" + strings.Join(strings.Fields("a b c d e f g h i j k l m n o p q"), "+"), 400, "at most 16 words"},
		{"/?cursor=x", 400, "portal: cursor is the next value"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			code, _, body := get(t, srv.URL+tt.path, "")
			if code != tt.code || !strings.Contains(body, tt.want) {
				t.Errorf("%d %s\nwant %d with %q", code, body, tt.code, tt.want)
			}
		})
	}
}

// TestEventsNewestFirst: the API pages newest first with a cursor and
// filters by study; the page shows readable rows with the JSON behind a
// disclosure.
func TestEventsNewestFirst(t *testing.T) {
	srv, db := newTestServer(t)
	ctx := context.Background()
	var evs []pipeline.Event
	for i := 1; i <= 5; i++ {
		d, _ := json.Marshal(pipeline.InstanceStoredDetail{StudyInstanceUID: "1.2.9", SOPInstanceUID: fmt.Sprint("1.2.9.1.", i), Modality: "CT", CallingAE: "LOCAL_AE",
			Conflict: i == 5, Patient: &pipeline.EventPatient{PatientID: "PX"}})
		evs = append(evs, pipeline.Event{ID: fmt.Sprint("s", i), DetailType: pipeline.DetailTypeInstanceStored, Time: t0.Add(time.Duration(i) * time.Minute), Detail: d})
	}
	if _, err := db.Outbox(nil).Publish(ctx, evs); err != nil {
		t.Fatal(err)
	}
	var page localstore.EventPage
	_, _, body := get(t, srv.URL+"/api/events?limit=2", "")
	if err := json.Unmarshal([]byte(body), &page); err != nil || len(page.Events) != 2 || page.Events[0].ID != "s5" || page.Next == "" {
		t.Fatalf("first page %s", body)
	}
	_, _, body = get(t, srv.URL+"/api/events?limit=10&before="+page.Next, "")
	page = localstore.EventPage{}
	if err := json.Unmarshal([]byte(body), &page); err != nil || len(page.Events) != 4 || page.Events[0].ID != "s3" || page.Next != "" {
		t.Fatalf("second page %s", body)
	}
	_, _, body = get(t, srv.URL+"/api/events?study=1.2.3", "")
	page = localstore.EventPage{}
	if err := json.Unmarshal([]byte(body), &page); err != nil || len(page.Events) != 1 || page.Events[0].ID != "e1" {
		t.Fatalf("by study %s", body)
	}
	code, _, html := get(t, srv.URL+"/events?type=Instance+Stored&limit=2", "")
	for _, want := range []string{`data-seq="6"`, "stored beside different content (conflict)", "CT from LOCAL_AE", "PX", "<details><summary>JSON</summary>", `id="next"`, `href="/studies/1.2.9"`} {
		if code != 200 || !strings.Contains(html, want) {
			t.Errorf("events page lacks %q", want)
		}
	}
	if strings.Contains(html, `data-seq="4"`) {
		t.Error("the page shows more than its limit")
	}
}

// TestEventsTailFromTheStart: after=0 tails from the first event, oldest
// first, and the last event's seq continues the tail: a subscriber reads
// every event in order from the beginning (after=0 was refused, and
// after=1 left out the first event).
func TestEventsTailFromTheStart(t *testing.T) {
	srv, db := newTestServer(t)
	var evs []pipeline.Event
	for i := 1; i <= 3; i++ {
		evs = append(evs, pipeline.Event{ID: fmt.Sprint("t", i), DetailType: pipeline.DetailTypeStudyReceived, Time: t0.Add(time.Duration(i) * time.Minute), Detail: json.RawMessage(`{}`)})
	}
	if _, err := db.Outbox(nil).Publish(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	var all localstore.EventPage
	_, _, body := get(t, srv.URL+"/api/events", "")
	if err := json.Unmarshal([]byte(body), &all); err != nil || len(all.Events) < 4 {
		t.Fatalf("every event %s", body)
	}
	var want []string // oldest first
	for _, e := range slices.Backward(all.Events) {
		want = append(want, e.ID)
	}
	var got []string
	after := "0"
	for range len(want) + 1 {
		var page localstore.EventPage
		code, _, body := get(t, srv.URL+"/api/events?limit=2&after="+after, "")
		if err := json.Unmarshal([]byte(body), &page); code != 200 || err != nil {
			t.Fatalf("after=%s: %d %s", after, code, body)
		}
		if len(page.Events) == 0 {
			break
		}
		for _, e := range page.Events {
			got = append(got, e.ID)
		}
		after = fmt.Sprint(page.Events[len(page.Events)-1].Seq)
	}
	if !slices.Equal(got, want) {
		t.Errorf("tailed from after=0: %q, want %q", got, want)
	}
}

// TestEventsOutbox: every events page names its outbox, in the JSON
// (outbox) and the X-Event-Outbox header, and outbox=<id> goes on only in
// that outbox: another's (a data directory started afresh) is a 400
// naming outbox and the way back, after=0 with this outbox, so a
// consumer that keeps (outbox, seq) never skips events unsaid.
func TestEventsOutbox(t *testing.T) {
	srv, db := newTestServer(t)
	other := openDB(t) // another data directory's database
	id, otherID := db.OutboxID(), other.OutboxID()
	for _, tt := range []struct {
		path string
		code int
		want string
	}{
		{"/api/events?after=0", 200, `"outbox": "` + id + `"`},
		{"/api/events?after=0&outbox=" + id, 200, `"id": "e1"`},
		{"/api/events?outbox=" + id, 200, `"id": "e1"`},
		{"/api/events?after=0&outbox=" + otherID, 400, otherID + `\" is not this data directory's (` + id + ")"},
		{"/api/events?after=1&outbox=" + otherID, 400, "after=0 with outbox=" + id},
		{"/api/events?outbox=" + otherID, 400, "after=0 with outbox=" + id},
		{"/api/events?after=0&outbox=x&outbox=" + id, 400, "portal: outbox is one value, given once"},
		{"/api/events?after=99999&outbox=" + id, 400, "after 99999 is past the last event's seq"},
		{"/events?after=0&outbox=" + otherID, 400, "is not this data directory"},
		{"/events?after=0&outbox=" + id, 200, `data-seq="1"`},
	} {
		t.Run(tt.path, func(t *testing.T) {
			code, h, body := get(t, srv.URL+tt.path, "")
			if code != tt.code || !strings.Contains(body, tt.want) {
				t.Errorf("%d %s\nwant %d with %q", code, body, tt.code, tt.want)
			}
			if api := strings.HasPrefix(tt.path, "/api/"); api && code == 200 && h.Get(localstore.OutboxHeader) != id {
				t.Errorf("%s %q, want %q", localstore.OutboxHeader, h.Get(localstore.OutboxHeader), id)
			}
		})
	}
}

// pageCheck is a page and what it must and must not show.
type pageCheck struct {
	path       string
	want, lack []string
}

// checkPages gets each page from the portal at base: a 200 showing what it
// wants and nothing it lacks.
func checkPages(t *testing.T, base string, pages []pageCheck) {
	t.Helper()
	for _, p := range pages {
		t.Run(p.path, func(t *testing.T) {
			code, _, body := get(t, base+p.path, "")
			if code != 200 {
				t.Fatalf("%d %s", code, body)
			}
			wantLack(t, body, p.want, p.lack)
		})
	}
}

// TestStudySearchAndAssociations: the studies page searches and pages;
// the audit trail groups per association with its records on demand.
func TestStudySearchAndAssociations(t *testing.T) {
	srv, db := newTestServer(t)
	ctx := context.Background()
	for i := range 3 {
		uid := fmt.Sprint("1.3.", i)
		if _, err := db.IndexStore().UpsertInstance(ctx, pipeline.InstanceRecord{StudyInstanceUID: uid, SeriesInstanceUID: uid + ".1", SOPInstanceUID: uid + ".1.1",
			ContentIdentity: "x", PatientName: "ROE^RICHARD", PatientID: "R1", AccessionNumber: fmt.Sprint("ACC", i), Modality: "US", CallingAE: "SITE_B",
			ReceivedAt: t0.Add(time.Hour + time.Duration(i)*time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range []pipeline.AuditRecord{
		{Outcome: "association-accepted"}, {Outcome: "stored", StudyInstanceUID: "1.3.0"}, {Outcome: "association-released"},
	} {
		r.ID, r.Time, r.AssociationID, r.CallingAE, r.CalledAE = fmt.Sprint("as", i), t0.Add(time.Duration(i)*time.Second), "assoc-7", "SITE_B", "REMOTE_AE"
		if _, err := db.AuditStore().Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	checkPages(t, srv.URL, []pageCheck{
		{"/?patient=richard+roe&limit=2", []string{"1.3.2", "1.3.1", `id="next"`}, []string{"1.3.0", `data-study-uid="1.2.3"`}},
		{"/?accession=ACC0", []string{"1.3.0"}, []string{"1.3.1"}},
		{"/?modality=MR", []string{`data-study-uid="1.2.3"`}, []string{"1.3.0"}},
		{"/?status=has+rejects", []string{`data-study-uid="1.2.3"`}, []string{"1.3.0"}},
		{"/?patient=nobody", []string{"No study matches."}, nil},
		{"/audit", []string{`data-association-id="assoc-7"`, "association-released", "2s", `href="/audit/associations/assoc-7"`}, nil},
		{"/audit/associations/assoc-7", []string{"lasted 2s", "stored", `href="/studies/1.3.0"`}, nil},
	})
	var out struct {
		Associations []localstore.Association
	}
	_, _, body := get(t, srv.URL+"/api/audit/associations", "")
	if err := json.Unmarshal([]byte(body), &out); err != nil || len(out.Associations) != 1 || out.Associations[0].Instances != 1 {
		t.Errorf("associations API: %s", body)
	}
}

// TestAssociationRowNamesRefusedContexts: the audit trail's row of an
// association, and its page, say what its A-ASSOCIATE-AC refused beside
// how it ended: a PACS that proposed only Explicit VR Big Endian showed as
// aborted "connection closed: EOF", and nothing on the page said why.
func TestAssociationRowNamesRefusedContexts(t *testing.T) {
	srv, db := newTestServer(t)
	ctx := context.Background()
	const refused = "no presentation context accepted (1 proposed): transfer syntax not supported (Explicit VR Big Endian (Retired) 1.2.840.10008.1.2.2)"
	for i, r := range []pipeline.AuditRecord{
		{Outcome: "association-accepted", Reason: refused}, {Outcome: "association-aborted", Reason: "dicomnet: connection closed: EOF"},
	} {
		r.ID, r.Time, r.AssociationID, r.CallingAE, r.CalledAE = fmt.Sprint("be", i), t0.Add(time.Duration(i)*time.Second), "assoc-be", "SITE_B", "REMOTE_AE"
		if _, err := db.AuditStore().Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	checkPages(t, srv.URL, []pageCheck{
		{"/audit", []string{`data-association-id="assoc-be"`, "connection closed: EOF", `<small class="refused-contexts">` + refused + "</small>"}, nil},
		{"/audit/associations/assoc-be", []string{`<dd class="refused-contexts">` + refused + "</dd>"}, nil},
	})
	var out struct {
		Association localstore.Association
	}
	_, _, body := get(t, srv.URL+"/api/audit/associations/assoc-be", "")
	if err := json.Unmarshal([]byte(body), &out); err != nil || out.Association.RefusedContexts != refused {
		t.Errorf("association API: %s", body)
	}
}

// TestThumbnails: a series' middle instance as a PNG, "no preview" for a
// transfer syntax not rendered, transfer syntaxes shown by name.
func TestThumbnails(t *testing.T) {
	ctx := context.Background()
	db, err := localstore.Open(ctx, filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	dir := t.TempDir()
	// A native PALETTE COLOR image: its transfer syntax is rendered, so
	// the page links its preview; only the render finds it has none.
	palette := pipelinetest.Instance{StudyUID: "1.5", SeriesUID: "1.5.3", SOPUID: "1.5.9.3", Rows: 4, Columns: 4, Extra: []pipelinetest.Elem{
		pipelinetest.U16(pipelinetest.Tag(0x28, 0x02), 1), pipelinetest.Str(pipelinetest.Tag(0x28, 0x04), "CS", "PALETTE COLOR"),
		pipelinetest.U16(pipelinetest.Tag(0x28, 0x101), 16), pipelinetest.U16(pipelinetest.Tag(0x28, 0x102), 15)}}.Build()
	fixture := func(name, key string) int64 {
		b, err := os.ReadFile(filepath.Join("..", "thumbnail", "testdata", name))
		if name == "palette" {
			b, err = palette, nil
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(key))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return int64(len(b))
	}
	for i, in := range []struct{ series, number, file, ts string }{
		{"1.5.1", "1", "native-mono1.dcm", "1.2.840.10008.1.2.1"},
		{"1.5.1", "2", "native-ct.dcm", "1.2.840.10008.1.2.1"}, // the middle of three
		{"1.5.1", "3", "native-mono1.dcm", "1.2.840.10008.1.2.1"},
		{"1.5.2", "1", "rle.dcm", "1.2.840.10008.1.2.5"},
		{"1.5.3", "1", "palette", "1.2.840.10008.1.2.1"},
	} {
		key := fmt.Sprintf("incoming/1.5/%s/%d.dcm", in.series, i)
		if _, err := db.IndexStore().UpsertInstance(ctx, pipeline.InstanceRecord{StudyInstanceUID: "1.5", SeriesInstanceUID: in.series, SeriesNumber: in.series[4:],
			SOPInstanceUID: fmt.Sprint("1.5.9.", i), ContentIdentity: "x", InstanceNumber: in.number, TransferSyntaxUID: in.ts, ObjectKey: key,
			Size: fixture(in.file, key), ReceivedAt: t0.Add(time.Duration(i) * time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	objects := dirOpener(dir)
	studies := &countingStudies{StudyReader: db.IndexStore()}
	s := &Server{Studies: studies, Search: db, Audit: db.AuditStore(), Associations: db, Events: db, Objects: objects,
		Thumbnails: thumbnail.New(objects.OpenRange, thumbnail.Options{})}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	code, _, html := get(t, srv.URL+"/studies/1.5", "")
	for _, want := range []string{`src="/studies/1.5/series/1.5.1/thumbnail.png"`, "no preview (RLE Lossless)", "Explicit VR Little Endian"} {
		if code != 200 || !strings.Contains(html, want) {
			t.Errorf("study page lacks %q", want)
		}
	}
	code, h, body := get(t, srv.URL+"/studies/1.5/series/1.5.1/thumbnail.png", "")
	if code != 200 || h.Get("Content-Type") != "image/png" {
		t.Fatalf("thumbnail: %d %s", code, h.Get("Content-Type"))
	}
	// The page picked the preview's instance: the preview reads the
	// study's summary, not the whole study again.
	if n := studies.reads.Load(); n != 1 {
		t.Errorf("%d whole-study reads for the page and its preview, want 1", n)
	}
	// A new instance moves the study's revision: the preview is picked
	// again.
	if _, err := db.IndexStore().UpsertInstance(ctx, pipeline.InstanceRecord{StudyInstanceUID: "1.5", SeriesInstanceUID: "1.5.1",
		SOPInstanceUID: "1.5.9.99", ContentIdentity: "y", InstanceNumber: "99", TransferSyntaxUID: "1.2.840.10008.1.2.1", ObjectKey: "none",
		ReceivedAt: t0.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	get(t, srv.URL+"/studies/1.5/series/1.5.1/thumbnail.png", "")
	if n := studies.reads.Load(); n != 2 {
		t.Errorf("%d whole-study reads after the study moved on, want 2", n)
	}
	img, err := png.Decode(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	// The CT fixture (dark left, light right) is the middle instance; the
	// MONOCHROME1 ones would be the other way round.
	if l, r := grey(img.At(0, 5)), grey(img.At(63, 5)); l > 20 || r < 235 {
		t.Errorf("thumbnail is not the middle instance: left %d right %d", l, r)
	}
	if h.Get("X-Preview") != "" {
		t.Errorf("a rendered preview says X-Preview: %q", h.Get("X-Preview"))
	}
	// No preview, found by the transfer syntax (the page says so) or only
	// by the render (the page links it, PALETTE COLOR): a 404 as before,
	// whose body is a "no preview" image for the page's <img> to show,
	// not a broken image, and X-Preview: none says it is no preview.
	if !strings.Contains(html, `src="/studies/1.5/series/1.5.3/thumbnail.png"`) {
		t.Errorf("study page does not link the PALETTE COLOR series' preview")
	}
	for _, p := range []string{"/studies/1.5/series/1.5.3/thumbnail.png", "/studies/1.5/series/1.5.2/thumbnail.png"} {
		code, h, body := get(t, srv.URL+p, "")
		if code != 404 || h.Get("Content-Type") != "image/png" || h.Get("X-Preview") != "none" {
			t.Errorf("%s: %d %s, X-Preview %q; want 404 image/png, X-Preview none", p, code, h.Get("Content-Type"), h.Get("X-Preview"))
		}
		checkNoPreviewImage(t, p, body)
	}
	// What is not there is no image.
	for _, p := range []string{"/studies/1.5/series/9.9/thumbnail.png", "/studies/9.9/series/1.5.1/thumbnail.png"} {
		if code, h, _ := get(t, srv.URL+p, ""); code != 404 || h.Get("Content-Type") == "image/png" || h.Get("X-Preview") != "" {
			t.Errorf("%s: %d %s, X-Preview %q; want a 404 without an image", p, code, h.Get("Content-Type"), h.Get("X-Preview"))
		}
	}
}

// checkNoPreviewImage: the no-preview image is a PNG of the thumbnails'
// size, in the colours of the page's "no preview" box, with its text
// drawn in it.
func checkNoPreviewImage(t *testing.T, path, body string) {
	t.Helper()
	img, err := png.Decode(strings.NewReader(body))
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	if b := img.Bounds(); b.Dx() != thumbnail.DefaultEdge || b.Dy() != thumbnail.DefaultEdge {
		t.Errorf("%s: size %v, want %d square", path, b, thumbnail.DefaultEdge)
	}
	colours := map[color.RGBA]int{}
	for y := range img.Bounds().Dy() {
		for x := range img.Bounds().Dx() {
			colours[color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)]++
		}
	}
	box, text := color.RGBA{0xee, 0xf1, 0xf6, 0xff}, color.RGBA{0x5b, 0x64, 0x75, 0xff}
	if len(colours) != 2 || colours[box] < colours[text] || colours[text] < 100 {
		t.Errorf("%s: colours %v, want the box's %v and fewer of the text's %v", path, colours, box, text)
	}
}

func grey(c interface{ RGBA() (r, g, b, a uint32) }) uint8 {
	r, g, b, _ := c.RGBA()
	return uint8((r + g + b) / 3 >> 8)
}

// countingStudies counts the whole-study reads.
type countingStudies struct {
	StudyReader
	reads atomic.Int64
}

func (c *countingStudies) GetStudy(ctx context.Context, uid string) (pipeline.StudyDetail, error) {
	c.reads.Add(1)
	return c.StudyReader.GetStudy(ctx, uid)
}

// TestThumbnailFailureNamesNoUID: a preview whose object cannot be read,
// and the object itself, fail without the instance's key or SOP Instance
// UID in the log (found by a probe: the request's URL, which the log line
// was redacted by, names the study and series only).
func TestThumbnailFailureNamesNoUID(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	dir := t.TempDir()
	const sop = "1.6.1.77701"
	key := "incoming/2026/01/15/1.6/1.6.1/" + sop + ".dcm"
	p := filepath.Join(dir, filepath.FromSlash(key))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(p, p); err != nil { // a loop: every open fails, naming the path
		t.Fatal(err)
	}
	if _, err := db.IndexStore().UpsertInstance(ctx, pipeline.InstanceRecord{StudyInstanceUID: "1.6", SeriesInstanceUID: "1.6.1",
		SOPInstanceUID: sop, ContentIdentity: "x", TransferSyntaxUID: "1.2.840.10008.1.2.1", ObjectKey: key, Size: 1000, ReceivedAt: t0}); err != nil {
		t.Fatal(err)
	}
	var logs testenv.LogBuffer
	objects := dirOpener(dir)
	s := &Server{Studies: db.IndexStore(), Search: db, Audit: db.AuditStore(), Associations: db, Events: db, Objects: objects,
		Thumbnails: thumbnail.New(objects.OpenRange, thumbnail.Options{}), Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	// The object itself, its dots escaped: the request's URL then names
	// no UID as the decoded path does, which the store's error quotes
	// (found by a probe: the line named the study UID whole).
	escaped := "/objects/" + strings.ReplaceAll(key, ".", "%2E")
	for _, path := range []string{"/studies/1.6/series/1.6.1/thumbnail.png", escaped} {
		if code, _, _ := get(t, srv.URL+path, ""); code != 500 {
			t.Errorf("GET %s of an unreadable object: %d, want 500", path, code)
		}
		out := logs.Take()
		if !strings.Contains(out, "request failed") {
			t.Fatalf("GET %s: the failure was not logged:\n%s", path, out)
		}
		for _, secret := range []string{sop, key, "77701", "1.6/1.6.1"} {
			if strings.Contains(out, secret) {
				t.Errorf("GET %s: the log names %q:\n%s", path, secret, out)
			}
		}
	}
}

// TestCutShortApart: a C-STORE the association's end cut short (status
// none: nothing answered) is no refusal. The study page listed and counted
// it among the "C-STOREs refused", and the studies list counted it a
// reject: a PACS administrator reads "refused" as "we said no". It is
// listed and counted apart, as cut short, on the study page, in its JSON
// and on the studies list, which agree; a refusal whose response could not
// be sent is still a refusal, and says it was not sent.
func TestCutShortApart(t *testing.T) {
	srv, db := newTestServer(t)
	ctx := context.Background()
	for _, study := range []string{"1.8", "1.9"} {
		if _, err := db.IndexStore().UpsertInstance(ctx, pipeline.InstanceRecord{StudyInstanceUID: study, SeriesInstanceUID: study + ".1",
			SOPInstanceUID: study + ".1.1", ContentIdentity: "x", Size: 10, ReceivedAt: t0, ObjectKey: "incoming/" + study + ".1.1.dcm"}); err != nil {
			t.Fatal(err)
		}
		if err := db.IndexStore().MarkAnnounced(ctx, study, 1, 1, t0); err != nil {
			t.Fatal(err)
		}
	}
	storeFailed := func(association, study, sop, status string, notSent bool, reason string) {
		t.Helper()
		if _, err := db.AuditStore().Append(ctx, pipeline.AssociationAuditRecord(associationaudit.Record{SchemaVersion: 1,
			Event: associationaudit.EventStoreFailed, Time: t0, AssociationID: association, CallingAE: "PACS", Seq: 3, Status: status, NotSent: notSent,
			Reason: reason, SOPInstanceUID: sop, StudyInstanceUID: study}, "test")); err != nil {
			t.Fatal(err)
		}
	}
	storeFailed("as81", "1.8", "1.8.1.2", "", false, "dicomnet: data set incomplete: dicomnet: connection closed: EOF")
	storeFailed("as91", "1.9", "1.9.1.2", "", false, "dicomnet: data set incomplete: dicomnet: connection closed: EOF")
	storeFailed("as92", "1.9", "1.9.1.3", "A700", true, "dicomnet: association ended while sending; out of resources")
	for _, tt := range []struct {
		study                    string
		status                   string
		rejects, cutShortMissing int
		refused, cutShort        int
		want, absent             []string
	}{
		{"1.8", localstore.StatusStable, 0, 1, 0, 1,
			[]string{`<span id="cut-short-missing">1 cut short and not stored since</span>`, `<span id="cut-short-history">C-STOREs cut short: 1`,
				`id="cut-short"`, "C-STORE not answered (the association ended before its data set did)"},
			[]string{`id="refused"`, "C-STOREs refused", `id="rejects"`}},
		{"1.9", localstore.StatusHasRejects, 1, 1, 1, 1,
			[]string{`<span id="rejects">1 rejected and not stored since</span>`, "0 quarantined, 1 C-STOREs refused", `id="refused"`, `id="cut-short"`,
				"C-STORE status A700 decided, not sent (the association ended before the response was written)"}, nil},
	} {
		t.Run(tt.study, func(t *testing.T) {
			var list localstore.StudyPage
			_, _, body := get(t, srv.URL+"/api/studies", "")
			if err := json.Unmarshal([]byte(body), &list); err != nil {
				t.Fatalf("/api/studies: %v %s", err, body)
			}
			i := slices.IndexFunc(list.Studies, func(s localstore.StudyRow) bool { return s.StudyInstanceUID == tt.study })
			if i < 0 {
				t.Fatalf("/api/studies lacks %s: %s", tt.study, body)
			}
			if s := list.Studies[i]; s.Status != tt.status || s.Rejects != tt.rejects || s.CutShortMissing != tt.cutShortMissing {
				t.Errorf("/api/studies: %s with %d rejects, %d cut short; want %s, %d, %d", s.Status, s.Rejects, s.CutShortMissing, tt.status, tt.rejects, tt.cutShortMissing)
			}
			_, _, html := get(t, srv.URL+"/", "")
			row := regexp.MustCompile(`(?s)<tr class="study" data-study-uid="` + regexp.QuoteMeta(tt.study) + `">.*?</tr>`).FindString(html)
			if !strings.Contains(row, `<span class="cut-short" title="C-STOREs cut short`) || !strings.Contains(row, fmt.Sprintf(">%d cut short</span>", tt.cutShortMissing)) {
				t.Errorf("studies page row %q lacks its C-STOREs cut short", row)
			}
			var p StudyPage
			_, _, body = get(t, srv.URL+"/api/studies/"+tt.study, "")
			if err := json.Unmarshal([]byte(body), &p); err != nil {
				t.Fatal(err)
			}
			if p.Status != tt.status || p.Rejects != tt.rejects || p.CutShortMissing != tt.cutShortMissing || len(p.Refused) != tt.refused || len(p.CutShort) != tt.cutShort {
				t.Errorf("/api/studies/%s: %s with %d rejects, %d cut short missing, %d refused, %d cut short", tt.study, p.Status, p.Rejects,
					p.CutShortMissing, len(p.Refused), len(p.CutShort))
			}
			_, _, html = get(t, srv.URL+"/studies/"+tt.study, "")
			wantLack(t, html, tt.want, tt.absent)
		})
	}
}

// wantLack fails t for each of want that body lacks and each of lack it has.
func wantLack(t *testing.T, body string, want, lack []string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Errorf("lacks %q", w)
		}
	}
	for _, w := range lack {
		if strings.Contains(body, w) {
			t.Errorf("has %q", w)
		}
	}
}

// TestRejectsAgree: a study whose only reject is a C-STORE the SCP
// refused (C001, nothing stored) is "has rejects" with its count on the
// studies page, in /api/studies and its status filter, and on the study
// page and its JSON, which list the refusal (it was listed on the study
// page while the status said stable and the count 0). The study with a
// quarantined instance is the other kind of reject.
func TestRejectsAgree(t *testing.T) {
	srv, db := newTestServer(t)
	ctx := context.Background()
	if _, err := db.IndexStore().UpsertInstance(ctx, pipeline.InstanceRecord{StudyInstanceUID: "1.4", SeriesInstanceUID: "1.4.1",
		SOPInstanceUID: "1.4.1.1", ContentIdentity: "x", Size: 10, ReceivedAt: t0, ObjectKey: "incoming/1.4.1.1.dcm"}); err != nil {
		t.Fatal(err)
	}
	if err := db.IndexStore().MarkAnnounced(ctx, "1.4", 1, 1, t0); err != nil {
		t.Fatal(err)
	}
	appendRefused(t, db, "as9", "1.4", "1.4.1.2")
	for _, tt := range []struct {
		study                string
		rejects              int
		quarantined, refused int
	}{
		{"1.4", 1, 0, 1},
		{"1.2.3", 1, 1, 0},
	} {
		t.Run(tt.study, func(t *testing.T) {
			var list localstore.StudyPage
			_, _, body := get(t, srv.URL+"/api/studies?status=has+rejects", "")
			if err := json.Unmarshal([]byte(body), &list); err != nil {
				t.Fatal(err)
			}
			found := false
			for _, s := range list.Studies {
				if s.StudyInstanceUID == tt.study {
					found = s.Status == localstore.StatusHasRejects && s.Rejects == tt.rejects
				}
			}
			if !found {
				t.Errorf("/api/studies?status=has+rejects: %s", body)
			}
			if _, _, body := get(t, srv.URL+"/api/studies?status=stable", ""); strings.Contains(body, `"studyInstanceUid": "`+tt.study+`"`) {
				t.Errorf("/api/studies?status=stable lists it: %s", body)
			}
			_, _, html := get(t, srv.URL+"/?status=has+rejects", "")
			row := regexp.MustCompile(`(?s)<tr class="study" data-study-uid="` + regexp.QuoteMeta(tt.study) + `">.*?</tr>`).FindString(html)
			if !strings.Contains(row, `<span class="status has rejects">has rejects</span> (<span class="rejects"`) ||
				!strings.Contains(row, fmt.Sprintf(">%d</span>)", tt.rejects)) || !strings.Contains(html, `id="status-help"`) {
				t.Errorf("studies page row %q", row)
			}
			var p StudyPage
			_, _, body = get(t, srv.URL+"/api/studies/"+tt.study, "")
			if err := json.Unmarshal([]byte(body), &p); err != nil {
				t.Fatal(err)
			}
			if p.Status != localstore.StatusHasRejects || p.Rejects != tt.rejects || len(p.Quarantined) != tt.quarantined || len(p.Refused) != tt.refused {
				t.Errorf("/api/studies/%s: %s with %d rejects, %d quarantined, %d refused", tt.study, p.Status, p.Rejects, len(p.Quarantined), len(p.Refused))
			}
			_, _, html = get(t, srv.URL+"/studies/"+tt.study, "")
			want := fmt.Sprintf("%d rejected and not stored since</span>; <span id=\"reject-history\">rejects received: %d quarantined, %d C-STOREs refused",
				tt.rejects, tt.quarantined, tt.refused)
			if !strings.Contains(html, `<span class="status has rejects">has rejects</span>`) || !strings.Contains(html, want) {
				t.Errorf("study page lacks its status or %q", want)
			}
		})
	}
}

// TestAuditOutcomeChoices: the audit records page offers as outcomes
// exactly those the audit trail writes (pipeline.AuditOutcomes, which the
// pipeline's tests hold its code to), in their order; it offered
// "duplicate", which no record has, and not "unparseable-record".
func TestAuditOutcomeChoices(t *testing.T) {
	srv, _ := newTestServer(t)
	_, _, html := get(t, srv.URL+"/audit/records", "")
	sel := regexp.MustCompile(`(?s)<select name="outcome">.*?</select>`).FindString(html)
	var offered []string
	for _, m := range regexp.MustCompile(`<option[^>]*>([^<]*)</option>`).FindAllStringSubmatch(sel, -1) {
		if m[1] != "any" {
			offered = append(offered, m[1])
		}
	}
	if !slices.Equal(offered, pipeline.AuditOutcomes) {
		t.Errorf("offered %q\nwant %q", offered, pipeline.AuditOutcomes)
	}
}

// TestResentRejectClears: a study whose refused C-STORE (C001 here; an
// A700 of a store short of space alike) the sender resent, now stored, is
// not "has rejects"
// (it said so for ever), while its page and JSON still list the refusal
// with its time; one not resent still is.
func TestResentRejectClears(t *testing.T) {
	srv, db := newTestServer(t)
	ctx := context.Background()
	store := func(sop string, at time.Time, revision int64) {
		t.Helper()
		if _, err := db.IndexStore().UpsertInstance(ctx, pipeline.InstanceRecord{StudyInstanceUID: "1.7", SeriesInstanceUID: "1.7.1",
			SOPInstanceUID: sop, ContentIdentity: sop, Size: 10, ReceivedAt: at, ObjectKey: "incoming/" + sop + ".dcm"}); err != nil {
			t.Fatal(err)
		}
		if err := db.IndexStore().MarkAnnounced(ctx, "1.7", revision, revision, at); err != nil {
			t.Fatal(err)
		}
	}
	store("1.7.1.1", t0, 1)
	appendRefused(t, db, "as7", "1.7", "1.7.1.2")
	status := func() (StudyPage, string) {
		t.Helper()
		var p StudyPage
		_, _, body := get(t, srv.URL+"/api/studies/1.7", "")
		if err := json.Unmarshal([]byte(body), &p); err != nil {
			t.Fatal(err)
		}
		_, _, html := get(t, srv.URL+"/studies/1.7", "")
		return p, html
	}
	if p, _ := status(); p.Status != localstore.StatusHasRejects || p.Rejects != 1 {
		t.Fatalf("before the resend: %s with %d rejects", p.Status, p.Rejects)
	}
	store("1.7.1.2", t0.Add(time.Minute), 2) // the good resend
	p, html := status()
	if p.Status != localstore.StatusStable || p.Rejects != 0 || len(p.Refused) != 1 || !p.Refused[0].Time.Equal(t0) {
		t.Errorf("after the resend: %s with %d rejects, %d refused", p.Status, p.Rejects, len(p.Refused))
	}
	for _, want := range []string{`<span class="status stable">stable</span>`, "rejects received: 0 quarantined, 1 C-STOREs refused", `id="refused"`,
		"<td>2026-11-26 10:00:00Z</td><td><code>1.7.1.2</code>"} {
		if !strings.Contains(html, want) {
			t.Errorf("study page lacks %q", want)
		}
	}
	if strings.Contains(html, `id="rejects"`) {
		t.Error("study page counts the cleared reject")
	}
	if _, _, body := get(t, srv.URL+"/api/studies?status=has+rejects", ""); strings.Contains(body, `"studyInstanceUid": "1.7"`) {
		t.Errorf("has rejects lists it: %s", body)
	}
}

// TestRejectMarksAgree: the study page and its JSON mark each reject
// cleared (the study holds an instance of its SOP Instance UID) or still
// missing, as the status and its count say (one SQL definition): a
// quarantined instance resent good, a C-STORE refused A700 (a store short
// of space) resent good, one refused and not resent, and an instance
// quarantined (content B) while the study holds another content (A) of
// its SOP Instance UID. The page listed every reject unmarked.
func TestRejectMarksAgree(t *testing.T) {
	srv, db := newTestServer(t)
	ctx := context.Background()
	store := func(study, sop, sha string, at time.Time, revision int64) {
		t.Helper()
		if _, err := db.IndexStore().UpsertInstance(ctx, pipeline.InstanceRecord{StudyInstanceUID: study, SeriesInstanceUID: study + ".1",
			SOPInstanceUID: sop, ContentIdentity: sha, Size: 10, ReceivedAt: at, ObjectKey: "incoming/" + sop + "." + sha + ".dcm"}); err != nil {
			t.Fatal(err)
		}
		if err := db.IndexStore().MarkAnnounced(ctx, study, revision, revision, at); err != nil {
			t.Fatal(err)
		}
	}
	appendRec := func(r pipeline.AuditRecord) {
		t.Helper()
		if _, err := db.AuditStore().Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	quarantined := func(id, study, sop string) {
		appendRec(pipeline.AuditRecord{ID: id, Time: t0, Outcome: pipeline.OutcomeRejected, CallingAE: "PACS", StudyInstanceUID: study,
			SOPInstanceUID: sop, Reason: "validation failed"})
	}
	refusedA700 := func(id, study, sop string) {
		appendRec(pipeline.AssociationAuditRecord(associationaudit.Record{SchemaVersion: 1, Event: associationaudit.EventStoreFailed, Time: t0,
			AssociationID: id, CallingAE: "PACS", Seq: 3, Status: "A700", Reason: "C-STORE status A700: out of resources",
			SOPInstanceUID: sop, StudyInstanceUID: study, SeriesInstanceUID: study + ".1"}, "test"))
	}
	later := t0.Add(time.Minute)
	tests := []struct {
		name, study, sop string
		kind             string // the table listing it: quarantined or refused
		setup            func()
		cleared          bool
	}{
		{"quarantined then resent", "3.1", "3.1.1.2", "quarantined", func() {
			store("3.1", "3.1.1.1", "a", t0, 1)
			quarantined("q31", "3.1", "3.1.1.2")
			store("3.1", "3.1.1.2", "good", later, 2)
		}, true},
		{"refused A700 then resent", "3.2", "3.2.1.2", "refused", func() {
			store("3.2", "3.2.1.1", "a", t0, 1)
			refusedA700("as32", "3.2", "3.2.1.2")
			store("3.2", "3.2.1.2", "good", later, 2)
		}, true},
		{"refused, not resent", "3.3", "3.3.1.2", "refused", func() {
			store("3.3", "3.3.1.1", "a", t0, 1)
			refusedA700("as33", "3.3", "3.3.1.2")
		}, false},
		// The study holds the SOP Instance UID (content A) from before the
		// quarantine of content B: cleared, by the definition the status
		// reads (the study misses no instance).
		{"quarantined B while A held", "3.4", "3.4.1.1", "quarantined", func() {
			store("3.4", "3.4.1.1", "contentA", t0, 1)
			quarantined("q34", "3.4", "3.4.1.1")
		}, true},
	}
	for _, tt := range tests {
		tt.setup()
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantStatus, wantRejects, wantMark, wantClass := localstore.StatusStable, 0, "cleared", "cleared"
			if !tt.cleared {
				wantStatus, wantRejects, wantMark, wantClass = localstore.StatusHasRejects, 1, "still missing", "missing"
			}
			// The JSON, read as a client reads it.
			type reject struct {
				SOPInstanceUID string `json:"sopInstanceUid"`
				Cleared        *bool  `json:"cleared"`
			}
			var p struct {
				Status      string   `json:"status"`
				Rejects     int      `json:"rejects"`
				Quarantined []reject `json:"quarantined"`
				Refused     []reject `json:"refused"`
			}
			_, _, body := get(t, srv.URL+"/api/studies/"+tt.study, "")
			if err := json.Unmarshal([]byte(body), &p); err != nil {
				t.Fatal(err)
			}
			list := p.Quarantined
			if tt.kind == "refused" {
				list = p.Refused
			}
			if p.Status != wantStatus || p.Rejects != wantRejects || len(p.Quarantined)+len(p.Refused) != 1 || len(list) != 1 ||
				list[0].SOPInstanceUID != tt.sop || list[0].Cleared == nil || *list[0].Cleared != tt.cleared {
				t.Errorf("/api/studies/%s: %s", tt.study, body)
			}
			// The studies list and its status filter.
			_, _, body = get(t, srv.URL+"/api/studies?status="+strings.ReplaceAll(wantStatus, " ", "+"), "")
			if !strings.Contains(body, `"studyInstanceUid": "`+tt.study+`"`) {
				t.Errorf("/api/studies?status=%s lacks it: %s", wantStatus, body)
			}
			// The study page: the reject's row and mark, and the count.
			_, _, html := get(t, srv.URL+"/studies/"+tt.study, "")
			table := regexp.MustCompile(`(?s)<table id="` + tt.kind + `">.*?</table>`).FindString(html)
			row := regexp.MustCompile(`<tr class="reject ([a-z]+)"><td>[^<]*</td><td><code>` + regexp.QuoteMeta(tt.sop) +
				`</code></td><td><span class="mark [a-z]+" title="[^"]*">([^<]*)</span></td>`).FindStringSubmatch(table)
			if row == nil || row[1] != wantClass || row[2] != wantMark {
				t.Errorf("study page's %s table marks it %q, want %q (class %q):\n%s", tt.kind, row, wantMark, wantClass, table)
			}
			if !strings.Contains(html, `<span class="status `+wantStatus+`">`+wantStatus+`</span>`) || strings.Contains(html, `id="rejects"`) == tt.cleared {
				t.Errorf("study page's status is not %s with %d rejects", wantStatus, wantRejects)
			}
		})
	}
}
