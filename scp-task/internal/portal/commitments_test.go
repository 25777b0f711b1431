package portal

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// TestCommitmentsPage: every Storage Commitment transaction, newest first,
// on the Commitments page and /api/commitments, filtered by calling AE and
// outcome and paged by cursor, each with its counts, its result's link
// and its studies: one that named no indexed study (shown on no study
// page, which was where a PACS administrator looked for it) and one
// whose Transaction UID was reused (0131) too.
func TestCommitmentsPage(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	cs := db.CommitmentStore()
	for i, tx := range []struct {
		ae      string
		state   pipeline.CommitmentState
		failed  int
		studies []string
		count   int // StudyCount: more than it names
		reused  bool
	}{
		{"PACS_A", pipeline.CommitmentReported, 0, []string{"1.2.7"}, 1001, false},
		{"PACS_B", pipeline.CommitmentReported, 2, nil, 0, false},     // named no instance the archive holds
		{"PACS_A", pipeline.CommitmentUndeliverable, 2, nil, 0, true}, // Transaction UID reused: all fail 0131
		{"PACS_B", pipeline.CommitmentPending, 0, nil, 0, false},      // waiting
	} {
		id := fmt.Sprint("tx", i)
		created, _, err := cs.CreateCommitment(ctx, pipeline.CommitmentTransaction{ID: id, TransactionUID: fmt.Sprint("1.2.8.", i),
			CallingAE: tx.ae, RefCount: 2, ReceivedAt: t0.Add(time.Duration(i) * time.Minute), WaitUntil: t0.Add(time.Hour), State: pipeline.CommitmentPending})
		if err != nil {
			t.Fatal(err)
		}
		created.State, created.Failed, created.Committed, created.Studies, created.StudyCount = tx.state, tx.failed, 2-tx.failed, tx.studies, tx.count
		if tx.reused {
			created.DuplicateOf = "tx0"
		}
		if tx.state != pipeline.CommitmentPending {
			created.ResultKey = pipeline.CommitmentResultKey(pipeline.CommitmentRequestsPrefix+id+".json", id)
		}
		if _, err := cs.UpdateCommitment(ctx, created); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer((&Server{Studies: db.IndexStore(), Search: db, Audit: db.AuditStore(), Associations: db, Events: db, Commitments: cs,
		Logger: errorLogger(t)}).Handler())
	t.Cleanup(srv.Close)

	api := []struct {
		query string
		want  []string // Transaction UIDs, newest first, over all pages
	}{
		{"", []string{"1.2.8.3", "1.2.8.2", "1.2.8.1", "1.2.8.0"}},
		{"?callingAe=PACS_B", []string{"1.2.8.3", "1.2.8.1"}},
		{"?outcome=success", []string{"1.2.8.0"}},
		{"?outcome=failure", []string{"1.2.8.2", "1.2.8.1"}},
		{"?outcome=failure&callingAe=PACS_A", []string{"1.2.8.2"}},
		{"?limit=1", []string{"1.2.8.3", "1.2.8.2", "1.2.8.1", "1.2.8.0"}},
		{"?limit=3&outcome=failure", []string{"1.2.8.2", "1.2.8.1"}},
	}
	for _, tt := range api {
		t.Run("api"+tt.query, func(t *testing.T) {
			var got []string
			next := srv.URL + "/api/commitments" + tt.query
			for pages := 0; next != ""; pages++ {
				code, _, body := get(t, next, "")
				var p commitmentsPage
				if err := json.Unmarshal([]byte(body), &p); err != nil || code != 200 || pages > 4 {
					t.Fatalf("%d %v %s", code, err, body)
				}
				for _, c := range p.Commitments {
					got = append(got, c.TransactionUID)
				}
				next = ""
				if p.Next != "" {
					sep := "?"
					if tt.query != "" {
						sep = "&"
					}
					next = srv.URL + "/api/commitments" + tt.query + sep + "cursor=" + p.Next
				}
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Errorf("transactions %v, want %v", got, tt.want)
			}
		})
	}

	_, _, body := get(t, srv.URL+"/api/commitments?callingAe=PACS_A", "")
	var p commitmentsPage
	if err := json.Unmarshal([]byte(body), &p); err != nil || len(p.Commitments) != 2 {
		t.Fatalf("%v %s", err, body)
	}
	reused, reported := p.Commitments[0], p.Commitments[1]
	if reused.State != "undeliverable" || !reused.DuplicateOfUID || reused.Failed != 2 || reused.Outcome != "failure" || len(reused.Studies) != 0 ||
		reused.ResultURL != "/objects/commitment/results/tx2.json" {
		t.Errorf("the reused transaction %+v", reused)
	}
	if reported.Outcome != "success" || reported.Committed != 2 || strings.Join(reported.Studies, " ") != "1.2.7" || reported.StudyCount != 1001 ||
		reported.ResultURL == "" {
		t.Errorf("the reported transaction %+v", reported)
	}

	checkPages(t, srv.URL, []pageCheck{
		{"/commitments", []string{`href="/commitments" class="on"`, `data-transaction-uid="1.2.8.1"`, `data-transaction-uid="1.2.8.3"`,
			`<a href="/objects/commitment/results/tx1.json"`, "none in the archive", `<a href="/studies/1.2.7"><code>1.2.7</code></a> and 1000 more (in the result)`,
			"Transaction UID reused", `class="commitment waiting"`, `href="/audit/records?outcome=commitment-refused"`}, nil},
		{"/commitments?outcome=failure", []string{`data-transaction-uid="1.2.8.1"`, `data-transaction-uid="1.2.8.2"`},
			[]string{`data-transaction-uid="1.2.8.0"`, `data-transaction-uid="1.2.8.3"`}},
		{"/commitments?limit=1", []string{`data-transaction-uid="1.2.8.3"`, `id="next"`}, []string{`data-transaction-uid="1.2.8.2"`}},
		{"/commitments?callingAe=NOBODY", []string{"No transaction matches."}, nil},
		{"/", []string{`<a href="/commitments">Storage Commitment</a>`}, nil},
	})
}

// TestCommitmentReportShown: each transaction's report as an operator needs it, on the Commitments page and
// /api/commitments: when it was delivered (reportedAt, also while its audit record or event is still owed, the
// transaction still reporting), when it was given up (givenUpAt: neither the page nor the JSON said so, so a PACS
// never told its result looked like one still being tried) and, while it is retried, until when. A given-up
// transaction showed only its attempts.
func TestCommitmentReportShown(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	cs := db.CommitmentStore()
	at, deadline := t0.Add(10*time.Minute), t0.Add(time.Hour)
	tests := []struct {
		name string
		tx   pipeline.CommitmentTransaction
		// wantCell is in the transaction's report cell; wantJSON in its JSON.
		wantCell string
		wantJSON []string
		lackJSON []string
	}{
		{"delivered", pipeline.CommitmentTransaction{State: pipeline.CommitmentReported, Attempts: 1, ReportedAt: at, SameAssociation: true},
			"delivered 2026-11-26 10:10:00Z on the same association",
			[]string{`"reportedAt":"2026-11-26T10:10:00Z"`, `"association":"same"`}, []string{`"givenUpAt"`}},
		{"delivered, its record owed", pipeline.CommitmentTransaction{State: pipeline.CommitmentReporting, Attempts: 2, ReportedAt: at},
			"delivered 2026-11-26 10:10:00Z on a new association",
			[]string{`"reportedAt":"2026-11-26T10:10:00Z"`, `"association":"new"`}, []string{`"givenUpAt"`}},
		{"retried", pipeline.CommitmentTransaction{State: pipeline.CommitmentReporting, Attempts: 3, LastError: "association refused"},
			"3 attempts: association refused; retried until 2026-11-26 11:00:00Z",
			[]string{`"reportDeadline":"2026-11-26T11:00:00Z"`}, []string{`"givenUpAt"`, `"reportedAt"`, `"association"`}},
		{"given up", pipeline.CommitmentTransaction{State: pipeline.CommitmentUndeliverable, Attempts: 9, LastError: "connection refused", GivenUpAt: deadline},
			`<span class="warn">given up 2026-11-26 11:00:00Z</span> after 9 attempts: connection refused`,
			[]string{`"givenUpAt":"2026-11-26T11:00:00Z"`}, []string{`"reportedAt"`, `"association"`}},
		{"given up, its record owed", pipeline.CommitmentTransaction{State: pipeline.CommitmentReporting, Attempts: 9, LastError: "connection refused", GivenUpAt: deadline},
			`<span class="warn">given up 2026-11-26 11:00:00Z</span> after 9 attempts: connection refused`,
			[]string{`"givenUpAt":"2026-11-26T11:00:00Z"`}, []string{`"reportedAt"`, `"association"`}},
		// Written by a version that kept a PACS's Error Comment (its UIDs replaced): shown by the rule the
		// undeliverable record and the logs say it by, without the PACS's own text.
		{"given up, the PACS's comment kept before", pipeline.CommitmentTransaction{State: pipeline.CommitmentUndeliverable, Attempts: 9, GivenUpAt: deadline,
			LastError: "commitreport: PACS answered the report with dimse: status 0x0110 (Processing failure): rejected for Zqxdoe^Jane: <uid>"},
			`after 9 attempts: commitreport: PACS answered the report with dimse: status 0x0110 (Processing failure), with an Error Comment not kept`,
			[]string{`(Processing failure), with an Error Comment not kept`}, []string{`Zqxdoe`, `rejected for`}},
		// Written before givenUpAt existed: it read "9 attempts: connection refused; retried until" its deadline.
		{"given up before givenUpAt", pipeline.CommitmentTransaction{State: pipeline.CommitmentUndeliverable, Attempts: 9, LastError: "connection refused"},
			`<span class="warn">given up (time unknown)</span> after 9 attempts: connection refused</td>`,
			[]string{`"state":"undeliverable"`}, []string{`"givenUpAt"`, `"reportedAt"`, `"association"`}},
	}
	for i, tt := range tests {
		tx := tt.tx
		tx.ID, tx.TransactionUID, tx.CallingAE, tx.RefCount = fmt.Sprint("tx", i), fmt.Sprint("1.2.9.", i), "PACS_A", 1
		tx.ReceivedAt, tx.WaitUntil, tx.ReportDeadline, tx.Committed = t0.Add(time.Duration(i)*time.Second), t0, deadline, 1
		tx.ResultKey = pipeline.CommitmentResultKey(pipeline.CommitmentRequestsPrefix+tx.ID+".json", tx.ID)
		created, _, err := cs.CreateCommitment(ctx, pipeline.CommitmentTransaction{ID: tx.ID, TransactionUID: tx.TransactionUID,
			CallingAE: tx.CallingAE, ReceivedAt: tx.ReceivedAt, State: pipeline.CommitmentPending})
		if err != nil {
			t.Fatal(err)
		}
		tx.Version = created.Version
		if _, err := cs.UpdateCommitment(ctx, tx); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer((&Server{Studies: db.IndexStore(), Search: db, Audit: db.AuditStore(), Associations: db, Events: db, Commitments: cs,
		Logger: errorLogger(t)}).Handler())
	t.Cleanup(srv.Close)
	_, _, page := get(t, srv.URL+"/commitments", "")
	_, _, body := get(t, srv.URL+"/api/commitments", "")
	var p struct {
		Commitments []json.RawMessage `json:"commitments"`
	}
	if err := json.Unmarshal([]byte(body), &p); err != nil || len(p.Commitments) != len(tests) {
		t.Fatalf("%v %s", err, body)
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			row := page[strings.Index(page, fmt.Sprintf(`data-transaction-uid="1.2.9.%d"`, i)):]
			row = row[:strings.Index(row, "</tr>")]
			if !strings.Contains(row, tt.wantCell) {
				t.Errorf("the page's row lacks %q:\n%s", tt.wantCell, row)
			}
			var b bytes.Buffer
			if err := json.Compact(&b, p.Commitments[len(tests)-1-i]); err != nil { // newest first
				t.Fatal(err)
			}
			js := b.String()
			for _, w := range tt.wantJSON {
				if !strings.Contains(js, w) {
					t.Errorf("the JSON lacks %s: %s", w, js)
				}
			}
			for _, l := range tt.lackJSON {
				if strings.Contains(js, l) {
					t.Errorf("the JSON has %s: %s", l, js)
				}
			}
		})
	}
}
