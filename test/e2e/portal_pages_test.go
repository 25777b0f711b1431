package e2e

import (
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/commitment"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// The thumbnail fixtures' study and series (testdata/make-fixtures.py),
// and the PALETTE COLOR series TestPortalPagesInBrowser adds to it.
const (
	fixtureStudy  = "2.25.1"
	fixtureSeries = "2.25.2"
	paletteSeries = "2.25.3"
)

// TestPortalPagesInBrowser drives the pages an operator lives in through
// headless chromium, after the real files of the DICOM parser's tests, the
// thumbnail fixtures and the synthesized study were sent: the studies
// search, a study's series previews (rendered server side from its middle
// instance), the audit trail one association per row with its records on
// demand, the events newest first in readable rows, and the Storage
// Commitment transactions, one of them of no study in the archive, and a
// study's rejects marked cleared or still missing. A series whose
// preview only the render finds missing (PALETTE COLOR) shows "no
// preview", not a broken image.
// Screenshots of each are saved in test/artifacts/.
func TestPortalPagesInBrowser(t *testing.T) {
	need(t, "dcmsend", "chromium")
	dir := t.TempDir()
	// LOCAL_AE may ask for Storage Commitment; its reports go on its
	// association, kept open for them.
	report := dicomnettest.ListenParrot(t)
	n := newNode(t, filepath.Join(dir, "data"), "--commitment-peers", "LOCAL_AE="+report.Addr, "--commitment-wait", "1s")
	n.start()
	real := testenv.DICOMTestdataFiles(t)
	fixtures, _ := filepath.Glob(filepath.Join(testenv.ModuleRoot(t), "scp-task", "internal", "thumbnail", "testdata", "*.dcm"))
	if len(fixtures) == 0 {
		t.Fatal("no thumbnail fixtures")
	}
	// A series of the fixtures' study in PALETTE COLOR: its transfer
	// syntax is rendered, so the page links its preview, and only the
	// render finds it has none.
	palette := filepath.Join(dir, "palette.dcm")
	if err := os.WriteFile(palette, pipelinetest.Instance{StudyUID: fixtureStudy, SeriesUID: paletteSeries, SOPUID: "2.25.199", Rows: 8, Columns: 8,
		Extra: []pipelinetest.Elem{pipelinetest.U16(pipelinetest.Tag(0x28, 0x02), 1), pipelinetest.Str(pipelinetest.Tag(0x28, 0x04), "CS", "PALETTE COLOR"),
			pipelinetest.U16(pipelinetest.Tag(0x28, 0x101), 16), pipelinetest.U16(pipelinetest.Tag(0x28, 0x102), 15)},
		// The study's own attributes stay the fixtures'.
		Drop: []uint32{pipelinetest.Tag(0x08, 0x50), pipelinetest.Tag(0x08, 0x1030), pipelinetest.Tag(0x10, 0x30), pipelinetest.Tag(0x10, 0x40)}}.Build(), 0o644); err != nil {
		t.Fatal(err)
	}
	fixtures = append(fixtures, palette)
	for _, set := range [][]string{real, fixtures, writeSynthStudy(t, dir)} {
		if out, err := n.dcmsend("LOCAL_AE", set...); err != nil {
			t.Fatalf("dcmsend: %v\n%s", err, out)
		}
	}
	testenv.Eventually(t, "every study indexed", func() bool {
		return len(n.studies()) == len(real)+2
	})
	base := "http://" + n.portal
	const mrStudy = "1.3.6.1.4.1.14519.5.2.1.9823.1001.108958069993282969141944803554" // 3.dcm

	t.Run("studies search", func(t *testing.T) {
		dom := chromium(t, []string{"--dump-dom"}, base+"/?patient=E2E-0001")
		rows := regexp.MustCompile(`<tr class="study" data-study-uid="([0-9.]+)"`).FindAllStringSubmatch(dom, -1)
		if len(rows) != 1 || rows[0][1] != synthStudy {
			t.Errorf("search by patient ID found %v, want only the synthesized study", rows)
		}
		dom = chromium(t, []string{"--dump-dom"}, base+"/?modality=MR&limit=1")
		if !strings.Contains(dom, `data-study-uid="`+mrStudy+`"`) {
			t.Errorf("search by modality lacks the MR study:\n%s", dom)
		}
	})

	t.Run("series previews", func(t *testing.T) {
		dom := chromium(t, []string{"--dump-dom"}, base+"/studies/"+mrStudy)
		m := regexp.MustCompile(`<img src="(/studies/[^"]+/thumbnail\.png)"`).FindStringSubmatch(dom)
		if m == nil {
			t.Fatalf("the MR study's series has no preview:\n%s", dom)
		}
		resp, err := http.Get(base + m[1])
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/png" {
			t.Errorf("thumbnail: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if !strings.Contains(dom, "Explicit VR Little Endian") && !strings.Contains(dom, "Implicit VR Little Endian") {
			t.Errorf("transfer syntax not shown by name")
		}
	})

	t.Run("no preview found by the render", func(t *testing.T) {
		// The PALETTE COLOR series' <img> shows a "no preview" image (a
		// 404 marked X-Preview: none), not a broken one; the fixtures'
		// series keeps its preview (portal-fixtures.png shows both).
		dom := chromium(t, []string{"--dump-dom"}, base+"/studies/"+fixtureStudy)
		for series, want := range map[string]string{paletteSeries: "none", fixtureSeries: ""} {
			src := "/studies/" + fixtureStudy + "/series/" + series + "/thumbnail.png"
			if !strings.Contains(dom, `<img src="`+src+`"`) {
				t.Errorf("the fixtures' study page does not link %s", src)
				continue
			}
			resp, err := http.Get(base + src)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("X-Preview"); got != want || resp.Header.Get("Content-Type") != "image/png" || (resp.StatusCode == 404) != (want == "none") {
				t.Errorf("%s: %d %s, X-Preview %q, want %q", src, resp.StatusCode, resp.Header.Get("Content-Type"), got, want)
			}
		}
	})

	t.Run("audit per association", func(t *testing.T) {
		var rows []string
		testenv.Eventually(t, "the synthesized study's association closed", func() bool {
			dom := chromium(t, []string{"--dump-dom"}, base+"/audit")
			rows = regexp.MustCompile(`(?s)<tr class="association outcome-association-released" data-association-id="([^"]+)">(.*?)</tr>`).FindAllString(dom, -1)
			return len(rows) == 3
		})
		if !strings.Contains(strings.Join(rows, ""), `<td class="n">5</td>`) {
			t.Errorf("no association row with the synthesized study's 5 instances:\n%s", strings.Join(rows, "\n"))
		}
		id := regexp.MustCompile(`data-association-id="([^"]+)"`).FindStringSubmatch(rows[0])[1]
		dom := chromium(t, []string{"--dump-dom"}, base+"/audit/associations/"+id)
		if !strings.Contains(dom, "association-accepted") || !strings.Contains(dom, "association-released") {
			t.Errorf("association page lacks its records:\n%s", dom)
		}
	})

	t.Run("events newest first", func(t *testing.T) {
		dom := chromium(t, []string{"--dump-dom"}, base+"/events?type=Instance+Stored&limit=5")
		seqs := regexp.MustCompile(`<tr class="event[^"]*" data-seq="([0-9]+)"`).FindAllStringSubmatch(dom, -1)
		if len(seqs) != 5 || seqs[0][1] <= seqs[4][1] && len(seqs[0][1]) <= len(seqs[4][1]) {
			t.Errorf("events not newest first: %v", seqs)
		}
		for _, want := range []string{"Instance Stored", "<summary>JSON</summary>", `id="next"`, " from LOCAL_AE"} {
			if !strings.Contains(dom, want) {
				t.Errorf("events page lacks %q", want)
			}
		}
		dom = chromium(t, []string{"--dump-dom"}, base+"/events?type=Instance+Stored&study="+synthStudy)
		if got := strings.Count(dom, `<tr class="event`); got != len(synthInstances) {
			t.Errorf("%d events of the synthesized study, want %d", got, len(synthInstances))
		}
	})

	t.Run("pages walk with their filters", func(t *testing.T) {
		// Each page's "next" link goes on with the page's own filters:
		// every row of the filtered query once, in three or four pages,
		// as the JSON API lists them in one. A cursor is sealed to its
		// filters, so a link that dropped or changed one would end the
		// walk on a refusal instead.
		for _, pg := range []struct{ page, api, list, row string }{
			{"/?callingAe=LOCAL_AE", "/api/studies?callingAe=LOCAL_AE&limit=1000", "studies", `<tr class="study" data-study-uid="([0-9.]+)"`},
			{"/events?type=Instance+Stored", "/api/events?type=Instance+Stored&limit=10000", "events", `<tr class="event[^"]*" data-seq="([0-9]+)"`},
			{"/audit?callingAe=LOCAL_AE", "/api/audit/associations?callingAe=LOCAL_AE&limit=500", "associations", `<tr class="association[^"]*" data-association-id="([^"]+)"`},
			{"/audit/records?callingAe=LOCAL_AE&outcome=stored", "/api/audit?callingAe=LOCAL_AE&outcome=stored&limit=10000", "records", `<tr class="outcome-stored">()`},
		} {
			var all map[string]json.RawMessage
			n.getJSON(pg.api, &all)
			var list []json.RawMessage
			if err := json.Unmarshal(all[pg.list], &list); err != nil {
				t.Fatalf("%s: %s: %v", pg.api, pg.list, err)
			}
			total := len(list)
			if total < 3 {
				t.Fatalf("%s: %d rows, too few to page", pg.api, total)
			}
			next := pg.page + fmt.Sprintf("&limit=%d", (total+2)/3)
			rows, seen := 0, map[string]bool{}
			for pages := 0; next != ""; pages++ {
				if pages == 5 {
					t.Fatalf("%s: no end after %d pages", pg.page, pages)
				}
				dom := chromium(t, []string{"--dump-dom"}, base+next)
				if strings.Contains(dom, `class="error"`) {
					t.Fatalf("%s: the page refused its own next link:\n%s", next, dom)
				}
				for _, m := range regexp.MustCompile(pg.row).FindAllStringSubmatch(dom, -1) {
					if rows++; m[1] != "" && seen[m[1]] {
						t.Errorf("%s: row %s twice", pg.page, m[1])
					}
					seen[m[1]] = true
				}
				next = ""
				if m := regexp.MustCompile(`<a href="([^"]+)" id="next">`).FindStringSubmatch(dom); m != nil {
					next = html.UnescapeString(m[1])
				}
			}
			if rows != total {
				t.Errorf("%s: walked %d rows, the API lists %d", pg.page, rows, total)
			}
		}
		// A page's cursor with other filters: the page says so, naming
		// the parameter, and keeps the filters to mend.
		var page struct{ Next string }
		n.getJSON("/api/audit/associations?callingAe=LOCAL_AE&limit=1", &page)
		dom := chromium(t, []string{"--dump-dom"}, base+"/audit?callingAe=OTHER_AE&cursor="+url.QueryEscape(page.Next))
		if !strings.Contains(html.UnescapeString(dom), "portal: cursor is the next value of a previous page of the same query") || !strings.Contains(dom, `value="OTHER_AE"`) {
			t.Errorf("a cursor of other filters: the page does not say so:\n%s", dom)
		}
	})

	t.Run("storage commitment", func(t *testing.T) {
		// One transaction of a stored instance and one never sent, one of
		// an instance never sent only: a study's page shows the first, no
		// study page the second.
		txn := func(n int) string { return fmt.Sprintf("2.25.9100%d", n) }
		p := dicomnettest.DialParrot(t, n.dicom)
		p.Associate(dicomnettest.CommitmentAssociateRQ("LOCAL_AE", "REMOTE_AE", dicomuid.ImplicitVRLittleEndian))
		for i, refs := range [][]commitment.Ref{
			{{SOPClassUID: pipelinetest.CTStorage, SOPInstanceUID: synthInstances[0].sop}, {SOPClassUID: pipelinetest.CTStorage, SOPInstanceUID: "2.25.9199"}},
			{{SOPClassUID: pipelinetest.CTStorage, SOPInstanceUID: "2.25.9198"}},
		} {
			ds, err := commitment.AppendRequest(nil, &commitment.Request{TransactionUID: txn(i + 1), Refs: refs}, dicomuid.ImplicitVRLittleEndian)
			if err != nil {
				t.Fatal(err)
			}
			p.SendMessage(5, dimse.NewNActionRQ(uint16(i+1), dicomuid.StorageCommitment, dicomuid.StorageCommitmentInstance, 1), ds)
			if rsp := p.ExpectCommand(); rsp.CommandField != dimse.NActionRSP || rsp.Status != dimse.StatusSuccess {
				t.Fatalf("N-ACTION-RSP %+v", rsp)
			}
		}
		p.Timeout = 20 * time.Second
		for range 2 {
			cmd, _ := p.ExpectMessage()
			if cmd.CommandField != dimse.NEventReportRQ {
				t.Fatalf("want an N-EVENT-REPORT, got %+v", cmd)
			}
			p.SendMessage(5, dimse.NewNEventReportRSP(cmd, dimse.Status{}), nil)
		}
		p.SendPDU(&pdu.ReleaseRQ{})
		p.Expect(pdu.TypeReleaseRP)

		var dom string
		testenv.Eventually(t, "both transactions reported", func() bool {
			dom = chromium(t, []string{"--dump-dom"}, base+"/commitments")
			return strings.Count(dom, `<tr class="commitment reported"`) == 2
		})
		for _, want := range []string{`data-transaction-uid="` + txn(1) + `"`, `data-transaction-uid="` + txn(2) + `"`, "none in the archive",
			`<a href="/studies/` + synthStudy + `">`, `href="/commitments" class="on"`, "on the same association"} {
			if !strings.Contains(dom, want) {
				t.Errorf("commitments page lacks %s:\n%s", want, dom)
			}
		}
		// Each result is linked, and opens.
		results := regexp.MustCompile(`<a href="(/objects/commitment/results/[^"]+)"`).FindAllStringSubmatch(dom, -1)
		if len(results) != 2 {
			t.Fatalf("result links %v, want 2", results)
		}
		resp, err := http.Get(base + results[0][1])
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("result %s: %d %s", results[0][1], resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		dom = chromium(t, []string{"--dump-dom"}, base+"/commitments?outcome=failure&callingAe=LOCAL_AE")
		if got := strings.Count(dom, `<tr class="commitment`); got != 2 {
			t.Errorf("%d transactions with failures from LOCAL_AE, want 2", got)
		}
	})

	// A study's rejects, each marked cleared or still missing as its
	// status counts them: content B of an instance it holds quarantined
	// (cleared: it holds the UID), and a new instance quarantined (still
	// missing) until a good resend of it is stored (cleared).
	const rejectStudy = synthStudy + ".77"
	rejectsURL := base + "/studies/" + rejectStudy
	t.Run("rejects marked", func(t *testing.T) {
		inst := func(name, sop string, bad bool) string {
			in := pipelinetest.Instance{StudyUID: rejectStudy, SeriesUID: rejectStudy + ".1", SOPUID: sop, PatientID: synthPatient,
				PatientName: "Roentgen^Wilhelm", Modality: "CT", Rows: 2, Columns: 2, SourceAE: "LOCAL_AE"}
			if bad {
				in.Drop = []uint32{pipelinetest.Tag(0x08, 0x60)} // no Modality: quarantined
			}
			path := filepath.Join(dir, name)
			if err := os.WriteFile(path, in.Build(), 0o644); err != nil {
				t.Fatal(err)
			}
			return path
		}
		held, missing := rejectStudy+".1.1", rejectStudy+".1.2"
		marks := func() map[string]string {
			dom := chromium(t, []string{"--dump-dom"}, rejectsURL)
			m := map[string]string{}
			for _, r := range regexp.MustCompile(`<tr class="reject ([a-z]+)"><td>[^<]*</td><td><code>([0-9.]+)</code>`).FindAllStringSubmatch(dom, -1) {
				m[r[2]] = r[1]
			}
			return m
		}
		if out, err := n.dcmsend("LOCAL_AE", inst("held.dcm", held, false)); err != nil {
			t.Fatalf("dcmsend: %v\n%s", err, out)
		}
		testenv.Eventually(t, "the held instance indexed", func() bool { return len(n.studies()) == len(real)+3 })
		if out, err := n.dcmsend("LOCAL_AE", inst("held-b.dcm", held, true), inst("missing.dcm", missing, true)); err != nil {
			t.Fatalf("dcmsend: %v\n%s", err, out)
		}
		var m map[string]string
		testenv.Eventually(t, "both quarantined", func() bool { m = marks(); return len(m) == 2 })
		if m[held] != "cleared" || m[missing] != "missing" {
			t.Errorf("marks %v, want the held instance's cleared, the new one's missing", m)
		}
		if out, err := n.dcmsend("LOCAL_AE", inst("resent.dcm", missing, false)); err != nil {
			t.Fatalf("dcmsend: %v\n%s", err, out)
		}
		testenv.Eventually(t, "the resend clears its reject", func() bool { m = marks(); return m[missing] == "cleared" })
		if m[held] != "cleared" {
			t.Errorf("marks after the resend %v", m)
		}
	})

	art := artifactsDir(t)
	for name, url := range map[string]string{
		"portal-search.png":       base + "/?modality=MR",
		"portal-previews.png":     base + "/studies/" + mrStudy,
		"portal-fixtures.png":     base + "/studies/" + fixtureStudy,
		"portal-associations.png": base + "/audit",
		"portal-events.png":       base + "/events",
		"portal-commitments.png":  base + "/commitments",
		"portal-rejects.png":      rejectsURL,
	} {
		path := filepath.Join(art, name)
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		args := []string{"--screenshot=" + path, "--hide-scrollbars", "--virtual-time-budget=3000"}
		if url == rejectsURL {
			args = append(args, "--window-size=1400,1500") // down to its rejects, marked
		}
		chromium(t, args, url)
		if st, err := os.Stat(path); err != nil || st.Size() < 1000 {
			t.Errorf("screenshot %s: %v", path, err)
			continue
		}
		t.Logf("screenshot saved: %s", path)
	}
}
