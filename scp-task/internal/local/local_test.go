package local

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/portal"
	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/filestore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// dirStore is a minimal file store for the in-process harness: whole
// object in memory (fine for test-sized objects), atomic rename.
type dirStore struct{ f *files }

func (s dirStore) Put(ctx context.Context, obj objectstore.Object, r io.Reader) (objectstore.Stored, error) {
	return s.PutWith(ctx, obj, r, filestore.Hooks{})
}

// PutWith hands every object off as the file store's file recipe does: by
// a queue row before it takes its key.
func (s dirStore) PutWith(ctx context.Context, obj objectstore.Object, r io.Reader, hooks filestore.Hooks) (objectstore.Stored, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return objectstore.Stored{}, err
	}
	key, err := objectstore.Key(obj)
	if err != nil {
		return objectstore.Stored{}, err
	}
	crc, crcB64 := objectstore.ContentChecksum(b)
	st := objectstore.Stored{Key: key, Size: int64(len(b)), CRC64NVME: crcB64}
	p, _ := s.f.path(key)
	if old, err := os.ReadFile(p); err == nil {
		if bytes.Equal(old, b) {
			st.Duplicate = true
			return st, nil
		}
		st.Key, st.Conflict = objectstore.ChecksumConflictKey(key, crc), true
	}
	if hooks.Before != nil {
		if _, err := hooks.Before(ctx, st, false); err != nil {
			return objectstore.Stored{}, err
		}
	}
	return st, s.f.writeFile(st.Key, bytes.NewReader(b))
}

func (s dirStore) PutRecord(_ context.Context, key string, body []byte) error {
	return s.f.writeFile(key, bytes.NewReader(body))
}

func (dirStore) Ready(context.Context) error { return nil }

func startTest(t *testing.T, dir string, webhooks ...string) *Local {
	t.Helper()
	l, err := Start(context.Background(), testConfig(dir, webhooks...))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testConfig is the tests' local mode on dir: a portal on a free port, a
// short quiet period and the plain file writer as its object store.
func testConfig(dir string, webhooks ...string) Config {
	return Config{
		DataDir: dir, PortalListen: "127.0.0.1:0", QuietPeriod: 300 * time.Millisecond, Webhooks: webhooks,
		ObjectStore: func(d string, _ func(string, []byte, func())) (ObjectStore, error) {
			return dirStore{&files{root: d}}, nil
		},
	}
}

func stop(t *testing.T, l *Local) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Shutdown(ctx); err != nil {
		t.Error(err)
	}
}

func getJSON(t *testing.T, l *Local, path string, v any) {
	t.Helper()
	resp, err := http.Get("http://" + l.PortalAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func put(t *testing.T, l *Local, in pipelinetest.Instance) objectstore.Stored {
	t.Helper()
	st, err := l.Store().Put(context.Background(), objectstore.Object{
		SOPClassUID: pipelinetest.CTStorage, SOPInstanceUID: in.SOPUID, StudyInstanceUID: in.StudyUID, SeriesInstanceUID: in.SeriesUID,
		TransferSyntaxUID: "1.2.840.10008.1.2.1", CallingAE: "LOCAL_AE", CalledAE: "REMOTE_AE", PeerAddr: "127.0.0.1:5000",
		AssociationID: "assoc1", ReceivedAt: time.Now(),
	}, bytes.NewReader(in.Build()))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func instance(series, sop string) pipelinetest.Instance {
	return pipelinetest.Instance{StudyUID: "1.2.826.0.1.3680043.2.1", SeriesUID: series, SOPUID: sop,
		PatientID: "PID-42", PatientName: "Test^Patient", Rows: 4, Columns: 4, SourceAE: "LOCAL_AE"}
}

func TestLocalFlow(t *testing.T) {
	var mu = make(chan struct{}, 1)
	var hooked []string
	hook := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct {
			DetailType string `json:"detail-type"`
		}
		_ = json.NewDecoder(r.Body).Decode(&ev)
		mu <- struct{}{}
		hooked = append(hooked, ev.DetailType)
		<-mu
	})
	hs := &http.Server{Handler: hook}
	lnHook := listen(t)
	go func() { _ = hs.Serve(lnHook) }()
	defer hs.Close()

	dir := t.TempDir()
	l := startTest(t, dir, "http://"+lnHook.Addr().String()+"/hook")
	defer stop(t, l)

	put(t, l, instance("1.2.826.0.1.3680043.2.1.1", "1.2.826.0.1.3680043.2.1.1.1"))
	put(t, l, instance("1.2.826.0.1.3680043.2.1.1", "1.2.826.0.1.3680043.2.1.1.2"))
	put(t, l, instance("1.2.826.0.1.3680043.2.1.2", "1.2.826.0.1.3680043.2.1.2.1"))
	// Invalid: no Study Instance UID in the dataset.
	bad := instance("1.2.826.0.1.3680043.2.1.2", "1.2.826.0.1.3680043.2.1.2.9")
	bad.Drop = []uint32{pipelinetest.Tag(0x20, 0x0D)}
	put(t, l, bad)
	// A rejected association, as the SCP records it.
	rec := associationaudit.Record{Event: associationaudit.EventRejected, Time: time.Now(), AssociationID: "assoc2",
		CallingAE: "EVIL_AE", CalledAE: "REMOTE_AE", PeerAddr: "127.0.0.1:6000", RejectResult: 1, RejectSource: 1, RejectReason: 3,
		Reason: "calling AE not allowed", Seq: 1}
	body, _ := associationaudit.Marshal(rec)
	key, _ := associationaudit.Key(rec)
	if err := l.Store().PutRecord(context.Background(), key, body); err != nil {
		t.Fatal(err)
	}
	l.Observer().ObserveAssociation(dicomnet.Event{Type: dicomnet.EventAccepted})
	l.Observer().ObserveAssociation(dicomnet.Event{Type: dicomnet.EventStored, Bytes: 10})

	var studies struct{ Studies []portal.Study }
	testenv.Eventually(t, "study indexed", func() bool {
		getJSON(t, l, "/api/studies", &studies)
		return len(studies.Studies) == 1 && studies.Studies[0].InstanceCount == 3
	})
	if s := studies.Studies[0]; s.SeriesCount != 2 || s.PatientID != "PID-42" {
		t.Errorf("study %+v", s)
	}
	var audit struct{ Records []pipeline.AuditRecord }
	testenv.Eventually(t, "audit records", func() bool {
		getJSON(t, l, "/api/audit?outcome=stored", &audit)
		return len(audit.Records) == 3
	})
	for _, r := range audit.Records {
		if r.CallingAE != "LOCAL_AE" || r.CalledAE != "REMOTE_AE" || r.PatientID != "PID-42" {
			t.Errorf("audit record %+v", r)
		}
	}
	testenv.Eventually(t, "quarantine", func() bool {
		getJSON(t, l, "/api/quarantine", &audit)
		return len(audit.Records) == 1 && len(audit.Records[0].Findings) > 0
	})
	testenv.Eventually(t, "security event", func() bool {
		getJSON(t, l, "/api/audit?callingAe=EVIL_AE", &audit)
		return len(audit.Records) == 1 && audit.Records[0].Outcome == "association-rejected"
	})
	var events struct{ Events []json.RawMessage }
	testenv.Eventually(t, "Study Received", func() bool {
		getJSON(t, l, "/api/events?type=Study+Received", &events)
		return len(events.Events) == 1
	})
	testenv.Eventually(t, "webhook delivery", func() bool {
		mu <- struct{}{}
		defer func() { <-mu }()
		for _, h := range hooked {
			if h == pipeline.DetailTypeStudyReceived {
				return true
			}
		}
		return false
	})
	var c portal.Counters
	getJSON(t, l, "/api/counters", &c)
	if c.Associations != 1 || c.Instances != 1 || c.PendingPipeline != 0 {
		t.Errorf("counters %+v", c)
	}
	// The event log and the webhooks are delivered each on its own: the
	// hook having the event says nothing of the log's line yet.
	testenv.Eventually(t, "Study Received in the event log", func() bool {
		logged, err := os.ReadFile(filepath.Join(dir, EventLogFile))
		return err == nil && strings.Contains(string(logged), `"detail-type":"Study Received"`)
	})
	// An instance event points at the object and its metadata through the
	// portal, where a subscriber on this machine can fetch them (it carried
	// the bare key, which nothing resolves).
	getJSON(t, l, "/api/events?type=Instance+Stored&limit=1", &events)
	var stored struct {
		Detail pipeline.InstanceStoredDetail `json:"detail"`
	}
	if len(events.Events) != 1 || json.Unmarshal(events.Events[0], &stored) != nil {
		t.Fatalf("Instance Stored events: %s", events.Events)
	}
	for _, u := range []string{stored.Detail.ObjectURI, stored.Detail.MetadataURI} {
		if !strings.HasPrefix(u, "http://"+l.ln.Addr().String()+"/objects/") {
			t.Errorf("event points at %q, not the portal's /objects/", u)
			continue
		}
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s", u, resp.Status)
		}
	}
}

// TestRestartProcessesOnce stages, by hand, what a crash leaves in each
// window of the hand-off and checks what a restart makes of it, three
// restarts in a row: an object handed off and stored but not processed is
// processed exactly once; a hand-off whose object never took its key is
// dropped and nothing is processed; a key completed just before the crash
// whose queue row survived is not processed again.
func TestRestartProcessesOnce(t *testing.T) {
	ctx := context.Background()
	type staged struct {
		name      string
		row, file bool // queue row, object under its key
		done      bool // the ledger has it done (its unit committed)
		wantAudit int
	}
	cases := []staged{
		{name: "handed off and stored, not processed", row: true, file: true, wantAudit: 1},
		{name: "handed off, never stored", row: true},
		{name: "processed, queue row left behind", row: true, file: true, done: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			l := startTest(t, dir)
			in := instance("1.2.826.0.1.3680043.2.1.1", "1.2.826.0.1.3680043.2.1.1.7")
			obj := objectstore.Object{SOPInstanceUID: in.SOPUID, StudyInstanceUID: in.StudyUID, SeriesInstanceUID: in.SeriesUID,
				CallingAE: "LOCAL_AE", CalledAE: "REMOTE_AE", ReceivedAt: time.Now()}
			key, _ := objectstore.Key(obj)
			if c.row {
				if _, err := l.db.Handoff().Enqueue(ctx, key, time.Now(), handoffMetadata(obj)); err != nil {
					t.Fatal(err)
				}
			}
			if c.done {
				// The unit that completed it removed its row afterwards.
				err := l.db.InTx(ctx, nil, func(tx *localstore.Tx) error { return tx.MarkDone(ctx, key, time.Now()) })
				if err != nil {
					t.Fatal(err)
				}
			}
			stop(t, l)
			if c.done {
				stageQueueRow(t, filepath.Join(dir, DBFile), key)
			}
			if c.file {
				f := &files{root: filepath.Join(dir, ObjectsDir)}
				if err := f.writeFile(key, bytes.NewReader(in.Build())); err != nil {
					t.Fatal(err)
				}
			}
			for round := range 3 {
				l = startTest(t, dir)
				var audit struct{ Records []pipeline.AuditRecord }
				if c.wantAudit > 0 {
					testenv.Eventually(t, "recovered object audited", func() bool {
						getJSON(t, l, "/api/audit?outcome=stored", &audit)
						return len(audit.Records) == c.wantAudit
					})
					if audit.Records[0].CalledAE != "REMOTE_AE" {
						t.Errorf("round %d: the hand-off's metadata was lost: %+v", round, audit.Records[0])
					}
				}
				testenv.Eventually(t, "an empty queue", func() bool {
					n, err := l.db.Handoff().Counts(ctx)
					return err == nil && n["pending"] == 0
				})
				getJSON(t, l, "/api/audit?outcome=stored", &audit)
				var events struct{ Events []json.RawMessage }
				getJSON(t, l, "/api/events?type=Instance+Stored", &events)
				if len(audit.Records) != c.wantAudit || len(events.Events) != c.wantAudit {
					t.Errorf("round %d: %d audit records, %d Instance Stored events; want %d", round, len(audit.Records), len(events.Events), c.wantAudit)
				}
				stop(t, l)
			}
		})
	}
}

// TestRecoverFailureNamesNoUID: a start that cannot look at a handed-off
// object says so without its key or UIDs, which the file's path holds
// (found by a probe: "scp-task cannot start" printed the whole key).
func TestRecoverFailureNamesNoUID(t *testing.T) {
	dir := t.TempDir()
	l := startTest(t, dir)
	in := instance("1.2.826.0.1.3680043.2.1.1", "1.2.826.0.1.3680043.2.1.1.77")
	obj := objectstore.Object{SOPInstanceUID: in.SOPUID, StudyInstanceUID: in.StudyUID, SeriesInstanceUID: in.SeriesUID, ReceivedAt: time.Now()}
	key, _ := objectstore.Key(obj)
	if _, err := l.db.Handoff().Enqueue(context.Background(), key, time.Now(), handoffMetadata(obj)); err != nil {
		t.Fatal(err)
	}
	stop(t, l)
	p := filepath.Join(dir, ObjectsDir, filepath.FromSlash(key))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(p, p); err != nil { // a loop: its stat fails, naming the path
		t.Fatal(err)
	}
	l, err := Start(context.Background(), testConfig(dir))
	if err == nil {
		stop(t, l)
		t.Fatal("started with an object it cannot look at")
	}
	for _, secret := range []string{key, in.SOPUID, in.SeriesUID} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the start's error names %q: %v", secret, err)
		}
	}
}

// stageQueueRow puts key back in the hand-off queue of the database at
// path, as a crash between a unit's commit and its queue row's removal
// leaves it.
func stageQueueRow(t *testing.T, path, key string) {
	t.Helper()
	q, err := sql.Open("sqlite", localstore.QueuePath(path))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, err := q.Exec(`INSERT INTO queue(key, enqueued_at, metadata) VALUES (?, 0, '{}')`, key); err != nil {
		t.Fatal(err)
	}
}

// TestFailingAnnouncementHoldsNoneBack: the announcer runs in one unit of
// work; a study whose announcement fails every time (an instance record
// that does not decode) must not undo the other studies' announcements,
// nor its own deferral.
func TestFailingAnnouncementHoldsNoneBack(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.QuietPeriod = time.Hour // nothing announced before the record breaks
	l, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	broken := instance("1.2.826.0.1.3680043.2.1.1", "1.2.826.0.1.3680043.2.1.1.1")
	put(t, l, broken)
	var studies struct{ Studies []portal.Study }
	testenv.Eventually(t, "study indexed", func() bool {
		getJSON(t, l, "/api/studies", &studies)
		return len(studies.Studies) == 1
	})
	stop(t, l)
	db, err := sql.Open("sqlite", filepath.Join(dir, DBFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE instances SET record = '{' WHERE study_uid = ?`, broken.StudyUID); err != nil {
		t.Fatal(err)
	}
	var failedAt int64
	if err := db.QueryRow(`SELECT last_activity FROM studies WHERE study_uid = ?`, broken.StudyUID).Scan(&failedAt); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()

	l = startTest(t, dir)
	defer stop(t, l)
	goodStudyAnnounced(t, l)
	// The broken study's failures were kept: its quiet period restarted.
	testenv.Eventually(t, "the broken study deferred", func() bool { return lastActivity(t, dir, broken.StudyUID) > failedAt })
}

// goodStudyAnnounced stores an instance of another study than instance's,
// which nothing breaks, and waits for its Study Received, the only one.
func goodStudyAnnounced(t *testing.T, l *Local) {
	t.Helper()
	good := instance("1.2.826.0.1.3680043.2.2.1", "1.2.826.0.1.3680043.2.2.1.1")
	good.StudyUID = "1.2.826.0.1.3680043.2.2"
	put(t, l, good)
	var events struct{ Events []json.RawMessage }
	testenv.Eventually(t, "the good study's Study Received", func() bool {
		getJSON(t, l, "/api/events?type=Study+Received", &events)
		return len(events.Events) == 1
	})
	if !strings.Contains(string(events.Events[0]), good.StudyUID) {
		t.Errorf("Study Received of another study: %s", events.Events[0])
	}
}

// lastActivity returns the study's last activity in the data directory's
// database (Unix ns), 0 while it has none.
func lastActivity(t *testing.T, dir, studyUID string) int64 {
	t.Helper()
	q, err := sql.Open("sqlite", filepath.Join(dir, DBFile))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	var at int64
	if err := q.QueryRow(`SELECT last_activity FROM studies WHERE study_uid = ?`, studyUID).Scan(&at); err != nil {
		return 0
	}
	return at
}

// poisonIndex is an index whose GetStudy panics for one study, with a
// value naming it: a bug every announcement of that study meets.
type poisonIndex struct {
	pipeline.IndexStore
	uid string
}

func (x poisonIndex) GetStudy(ctx context.Context, uid string) (pipeline.StudyDetail, error) {
	if uid == x.uid {
		panic("cannot announce " + uid)
	}
	return x.IndexStore.GetStudy(ctx, uid)
}

// TestPanickingAnnouncementHoldsNoneBack: a study whose announcement
// panics every time, quiet the longest, fails alone in the announcer's
// runs: the study behind it is announced, its deferral is kept (its quiet
// period restarted, run after run), and the log names it by its log name,
// never by its UID. The panic was recovered only around the run: every run
// failed at the poison study, first again each time, and the studies
// behind it were never announced.
func TestPanickingAnnouncementHoldsNoneBack(t *testing.T) {
	dir := t.TempDir()
	logs := &testenv.LogBuffer{}
	cfg := testConfig(dir)
	cfg.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	poison := instance("1.2.826.0.1.3680043.2.1.1", "1.2.826.0.1.3680043.2.1.1.1")
	cfg.announceIndex = func(ix pipeline.IndexStore) pipeline.IndexStore { return poisonIndex{ix, poison.StudyUID} }
	l, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer stop(t, l)
	put(t, l, poison)
	line := `"msg":"` + pipeline.AnnouncePanicLog + `"`
	testenv.Eventually(t, "the poison study's announcement panicked", func() bool { return strings.Contains(logs.String(), `"panic":`) })
	deferred := lastActivity(t, dir, poison.StudyUID)
	goodStudyAnnounced(t, l)
	testenv.Eventually(t, "the poison study deferred again by a later run", func() bool { return lastActivity(t, dir, poison.StudyUID) > deferred })
	out := logs.String()
	if !strings.Contains(out, line) || !strings.Contains(out, l.cfg.Names.Name(poison.StudyUID)) || !strings.Contains(out, `"panic":"a value of type string"`) {
		t.Errorf("the log lacks %s with the poison study's log name and the panic's type:\n%s", line, out)
	}
	for _, leak := range []string{poison.StudyUID, poison.SeriesUID, poison.SOPUID} {
		if strings.Contains(out, leak) {
			t.Errorf("the log names %s:\n%s", leak, out)
		}
	}
}

func TestHandoffStoreFailures(t *testing.T) {
	dir := t.TempDir()
	boom := fmt.Errorf("disk full: %w", objectstore.ErrUnavailable)
	l, err := Start(context.Background(), Config{DataDir: dir, PortalListen: "127.0.0.1:0",
		ObjectStore: func(string, func(string, []byte, func())) (ObjectStore, error) { return failingStore{boom}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer stop(t, l)
	in := instance("1.2.3", "1.2.3.4")
	_, err = l.Store().Put(context.Background(), objectstore.Object{SOPInstanceUID: in.SOPUID, ReceivedAt: time.Now()}, bytes.NewReader(in.Build()))
	if err != boom {
		t.Fatalf("Put error = %v, want the store's", err)
	}
	// Nothing of its hand-off remains.
	testenv.Eventually(t, "no hand-off of the failed Put", func() bool {
		n, err := l.db.Handoff().Counts(context.Background())
		return err == nil && n["pending"] == 0
	})
}

type failingStore struct{ err error }

func (s failingStore) Put(context.Context, objectstore.Object, io.Reader) (objectstore.Stored, error) {
	return objectstore.Stored{}, s.err
}
func (s failingStore) PutWith(context.Context, objectstore.Object, io.Reader, filestore.Hooks) (objectstore.Stored, error) {
	return objectstore.Stored{}, s.err
}
func (s failingStore) PutRecord(context.Context, string, []byte) error { return s.err }
func (s failingStore) Ready(context.Context) error                     { return s.err }

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// TestOneProcessPerDataDir: a second Start on a data directory in use
// fails at once, naming the holder; after the first stops, it starts.
func TestOneProcessPerDataDir(t *testing.T) {
	dir := t.TempDir()
	first := startTest(t, dir)
	_, err := Start(context.Background(), Config{DataDir: dir, PortalListen: "127.0.0.1:0"})
	if !errors.Is(err, ErrDataDirInUse) || !strings.Contains(err.Error(), fmt.Sprintf("process %d (started ", os.Getpid())) {
		t.Fatalf("second Start = %v, want ErrDataDirInUse naming this process", err)
	}
	if err := CheckDataDir(dir); !errors.Is(err, ErrDataDirInUse) {
		t.Errorf("CheckDataDir = %v", err)
	}
	stop(t, first)
	if err := CheckDataDir(dir); err != nil {
		t.Errorf("CheckDataDir after stop = %v", err)
	}
	stop(t, startTest(t, dir))
}

// TestPortalURL: the portal's URL in the start log and the events' object
// URLs are ones a browser on this machine opens: a portal listening on
// every interface is named by loopback (the log said http://[::]:8092/).
func TestPortalURL(t *testing.T) {
	for _, tt := range []struct{ listen, want string }{
		{"127.0.0.1:8080", "http://127.0.0.1:8080/"},
		{"[::1]:8080", "http://[::1]:8080/"},
		{"0.0.0.0:8092", "http://127.0.0.1:8092/"},
		{"[::]:8092", "http://127.0.0.1:8092/"},
	} {
		addr, err := net.ResolveTCPAddr("tcp", tt.listen)
		if err != nil {
			t.Fatal(err)
		}
		if got := portalURL(addr); got != tt.want {
			t.Errorf("%s: portal %q, want %q", tt.listen, got, tt.want)
		}
		if got := objectURLBase(addr); got != tt.want+"objects/" {
			t.Errorf("%s: objects at %q, want %q", tt.listen, got, tt.want+"objects/")
		}
	}
}

// TestPortalReachableBeyondThisMachine: the start warns that the portal
// shows patient data beyond this machine whenever it listens on an address
// other machines reach, ":8080" (every interface) as much as "0.0.0.0:8080":
// the warning went by the configured address's host, and ":8080", which
// names none, passed without one.
func TestPortalReachableBeyondThisMachine(t *testing.T) {
	for _, tt := range []struct {
		listen string
		want   bool
	}{
		{"127.0.0.1:8080", false},
		{"127.0.0.23:8080", false},
		{"[::1]:8080", false},
		{"localhost:8080", false},
		{":8080", true},
		{"0.0.0.0:8080", true},
		{"[::]:8080", true},
		{"192.0.2.10:8080", true},
	} {
		addr, err := net.ResolveTCPAddr("tcp", tt.listen)
		if err != nil {
			t.Fatal(err)
		}
		if got := reachableBeyond(addr); got != tt.want {
			t.Errorf("%s: reachable beyond this machine = %v, want %v", tt.listen, got, tt.want)
		}
	}
}

// TestShutdownCutInTheStoresClose: a stop cut short while the file store
// closes (a second signal during its journal's checkpoint, which goes on
// behind the close until the process ends) keeps the data directory
// locked until the exit: it let the lock go at once, so another scp-task
// on the directory could start and replay the journal beside that
// checkpoint.
func TestShutdownCutInTheStoresClose(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	cfg := testConfig(dir)
	cfg.ObjectStore = func(d string, _ func(string, []byte, func())) (ObjectStore, error) {
		return cutClose{dirStore{&files{root: d}}, func() { cancel(testenv.ErrSecondSignal) }}, nil
	}
	l, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown cut short: %v", err)
	}
	if err := CheckDataDir(dir); !errors.Is(err, ErrDataDirInUse) {
		t.Errorf("the data directory's lock let go while the file store's close went on: %v", err)
	}
	// The process's exit would let it go.
	if err := l.lock.release(); err != nil {
		t.Fatal(err)
	}
}

// TestShutdownAfterSyncFailureKeepsTheLock: after a failed fsync of the
// database's log, the stop leaves the database open (closing it would
// checkpoint it, and trust that checkpoint's fsync) and so keeps the data
// directory locked until the process exits: it let the lock go with the
// database's connections still open, so another scp-task could open the
// database beside them.
func TestShutdownAfterSyncFailureKeepsTheLock(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	eio := errors.New("input/output error")
	cfg.dbOptions = []localstore.Option{localstore.WithLogSync(func(*os.File) error { return eio })}
	l, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.db.Sync(context.Background()); !errors.Is(err, localstore.ErrSyncFailed) {
		t.Fatalf("Sync = %v, want ErrSyncFailed", err)
	}
	stop(t, l)
	if err := CheckDataDir(dir); !errors.Is(err, ErrDataDirInUse) {
		t.Errorf("the data directory's lock let go with the database's connections open: %v", err)
	}
	// The process's exit would let both go.
	if err := errors.Join(l.db.SQL().Close(), l.lock.release()); err != nil {
		t.Fatal(err)
	}
}

// TestStartFailsOnAFailedCheckpointFsync: a failed fsync at the start's
// checkpoint of either database fails the start at once, naming the data
// directory's database file and the failed fsync, and keeps the data
// directory locked until the process exits (the failed database's
// connections stay open, as after a failed sync at a stop), where another
// failed start lets it go. The start succeeded, and every durable commit
// after it failed: each C-STORE refused until a restart.
func TestStartFailsOnAFailedCheckpointFsync(t *testing.T) {
	eio := errors.New("input/output error")
	boom := errors.New("boom")
	for _, tt := range []struct {
		name     string
		fail     string // the database file whose checkpoint fails, "" none
		objects  error  // the object store's failure
		want     error
		lockHeld bool
	}{
		{"checkpoint of " + DBFile, DBFile, nil, localstore.ErrSyncFailed, true},
		{"checkpoint of the queue", filepath.Base(localstore.QueuePath(DBFile)), nil, localstore.ErrSyncFailed, true},
		{"object store", "", boom, boom, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(dir)
			failed := filepath.Join(dir, tt.fail)
			cfg.dbOptions = []localstore.Option{localstore.WithCheckpointSync(func(file string) error {
				if tt.fail != "" && file == failed {
					return eio
				}
				return nil
			})}
			if tt.objects != nil {
				cfg.ObjectStore = func(string, func(string, []byte, func())) (ObjectStore, error) { return nil, tt.objects }
			}
			l, err := Start(context.Background(), cfg)
			if err == nil {
				stop(t, l)
				t.Fatal("the start succeeded")
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("Start = %v, want %v", err, tt.want)
			}
			if tt.fail != "" {
				for _, want := range []string{failed + ": ", "checkpoint", "fsync failed", eio.Error()} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("Start = %q, want it to say %q", err, want)
					}
				}
			}
			if err := CheckDataDir(dir); errors.Is(err, ErrDataDirInUse) != tt.lockHeld {
				t.Errorf("after the failed start the data directory's lock is held: %v, want %v", err, tt.lockHeld)
			}
			// The process's exit would let a lock held go, and the
			// failed database's connections.
		})
	}
}

// cutClose is a file store whose close a second signal (cut) cuts short,
// returning as filestore.Store.Shutdown does then.
type cutClose struct {
	dirStore
	cut func()
}

func (c cutClose) Shutdown(ctx context.Context) error {
	c.cut()
	<-ctx.Done()
	return nil
}

// TestShutdownCutShort: a stop whose time is up or that a second signal
// cuts short (ctx ended, its cause the signal) while the portal still
// holds a connection (one sending its request) ends at once without an
// error, with a line saying nothing acknowledged is lost (the journal and
// the database are crash-safe) and why: it failed with 'context canceled'
// and said nothing of what a stop cut short leaves.
func TestShutdownCutShort(t *testing.T) {
	logs := &testenv.LogBuffer{}
	cfg := testConfig(t.TempDir())
	cfg.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	l, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", l.PortalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\n"); err != nil { // a request under way
		t.Fatal(err)
	}
	// The portal has the connection once it answers another.
	if resp, err := http.Get("http://" + l.PortalAddr() + "/healthz"); err == nil {
		resp.Body.Close()
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errors.New("cut short by a second signal"))
	if err := l.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown cut short: %v", err)
	}
	line := `"msg":"` + stopCutShort + `"`
	if n := strings.Count(logs.String(), line); n != 1 || !strings.Contains(logs.String(), `"err":"cut short by a second signal"`) {
		t.Errorf("%d lines %s with the cause; log:\n%s", n, line, logs.String())
	}
}

// TestPipelinePanicFailsTheAttempt: a panic processing one object (a bug)
// fails that attempt alone, as an error would: its unit's writes are
// undone, it is retried, and the SCP goes on. Its line tells the panic by
// panicvalue's rule, never the value (here the object's UIDs). A panic
// there ended the SCP with the value on standard error.
func TestPipelinePanicFailsTheAttempt(t *testing.T) {
	in := instance("1.2.826.0.1.3680043.2.1.1", "1.2.826.0.1.3680043.2.1.1.1")
	tests := []struct {
		name      string
		panicWith func(key string) any
		wantPanic string
	}{
		{"a value built from the object", func(key string) any { return "cannot index " + key + " of " + in.SOPUID }, `"panic":"a value of type string"`},
		{"a runtime error", func(key string) any {
			var none []string
			return none[len(key)%7+1] // index out of range
		}, `"panic":"runtime error: index out of range [`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := &testenv.LogBuffer{}
			cfg := testConfig(t.TempDir())
			cfg.Logger = slog.New(slog.NewJSONHandler(logs, nil))
			var once sync.Once
			cfg.beforeCommit = func(key string) {
				if strings.HasPrefix(key, pipeline.IncomingPrefix) {
					once.Do(func() { panic(tt.panicWith(key)) })
				}
			}
			l, err := Start(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer stop(t, l)
			st := put(t, l, in)
			var studies struct{ Studies []portal.Study }
			testenv.Eventually(t, "the object processed on its retry", func() bool {
				getJSON(t, l, "/api/studies", &studies)
				return len(studies.Studies) == 1 && studies.Studies[0].InstanceCount == 1
			})
			var audit struct{ Records []pipeline.AuditRecord }
			getJSON(t, l, "/api/audit?outcome=stored", &audit)
			if len(audit.Records) != 1 {
				t.Errorf("%d audit records, want the retry's alone: the panicked attempt's were kept", len(audit.Records))
			}
			if n := testutil.ToFloat64(l.processed.WithLabelValues("error")); n != 1 {
				t.Errorf("counted %v errors, want the panicked attempt", n)
			}
			out := logs.String()
			for _, want := range []string{`"msg":"` + PanicLog + `"`, tt.wantPanic, `"stack":`, `"msg":"pipeline failed; will retry"`} {
				if !strings.Contains(out, want) {
					t.Errorf("the log lacks %s:\n%s", want, out)
				}
			}
			for _, leak := range []string{st.Key, in.SOPUID, in.SeriesUID, in.StudyUID} {
				if strings.Contains(out, leak) {
					t.Errorf("the log names %s:\n%s", leak, out)
				}
			}
		})
	}
}
