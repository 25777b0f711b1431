package interop

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
	"github.com/dicom-ingest/dicom-ingest/test/internal/synth"
)

// ecsAgent stands in for the ECS agent's task scale-in protection endpoint
// ($ECS_AGENT_URI/task-protection/v1/state), answering as the agent does.
type ecsAgent struct {
	mu      sync.Mutex
	states  []bool // ProtectionEnabled of each PUT that succeeded
	minutes []int
	failing bool
	hang    chan struct{} // while non-nil, requests wait on it
	calls   int
}

func newECSAgent(t *testing.T) (*ecsAgent, string) {
	a := &ecsAgent{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut || r.URL.Path != "/api/0123abcd-task/task-protection/v1/state" {
			http.NotFound(w, r)
			return
		}
		var body struct {
			ProtectionEnabled *bool
			ExpiresInMinutes  *int
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.ProtectionEnabled == nil {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":{"Code":"InvalidParameterException","Message":"Invalid request: does not contain 'ProtectionEnabled' field"}}`))
			return
		}
		a.mu.Lock()
		a.calls++
		failing, hang := a.failing, a.hang
		a.mu.Unlock()
		if hang != nil {
			select {
			case <-hang:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		if failing {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"error":{"Arn":"arn:aws:ecs:eu-west-1:111122223333:task/c/0123abcd","Code":"ServerException","Message":"throttled"}}`))
			return
		}
		a.mu.Lock()
		a.states = append(a.states, *body.ProtectionEnabled)
		m := 0
		if body.ExpiresInMinutes != nil {
			m = *body.ExpiresInMinutes
		}
		a.minutes = append(a.minutes, m)
		a.mu.Unlock()
		_, _ = w.Write([]byte(`{"protection":{"ExpirationDate":"2026-01-01T00:15:00Z","ProtectionEnabled":true,"TaskArn":"arn:aws:ecs:eu-west-1:111122223333:task/c/0123abcd"}}`))
	}))
	t.Cleanup(srv.Close)
	return a, srv.URL + "/api/0123abcd-task"
}

func (a *ecsAgent) history() ([]bool, []int, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]bool(nil), a.states...), append([]int(nil), a.minutes...), a.calls
}

func (a *ecsAgent) set(failing bool, hang chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.failing, a.hang = failing, hang
}

func storeOne(t *testing.T, as *dicomnet.ClientAssociation, uid string) {
	t.Helper()
	obj := synth.Object{StudyUID: "1.2.826.0.1.3680043.2.8", SeriesUID: "1.2.826.0.1.3680043.2.8.1", SOPInstanceUID: uid,
		PatientID: "P8", PatientName: "Test^Protect", PixelBytes: 4096}
	st, err := as.Store(scptest.Context(t), synth.SOPClassUID, uid, synth.TransferSyntaxUID, obj.Dataset())
	if err != nil || !st.IsSuccess() {
		t.Fatalf("C-STORE %s: %v %v", uid, st, err)
	}
}

// TestScaleInProtection runs scp-task as on ECS, with ECS_AGENT_URI
// pointing at a stand-in for the agent: an association protects the task
// (for a bounded time, renewed while busy), the protection is released
// once the task has been idle for --scale-in-protection-release, and an
// endpoint that fails or hangs changes nothing for the C-STOREs.
func TestScaleInProtection(t *testing.T) {
	agent, uri := newECSAgent(t)
	const release = 1500 * time.Millisecond
	scp := scptest.Start(t, scptest.Options{
		Args: []string{"--ae-title", "REMOTE_AE", "--calling-aes", "LOCAL_AE", "--scale-in-protection-release", release.String()},
		Env:  []string{"ECS_AGENT_URI=" + uri},
	})
	ctx := scptest.Context(t)

	// Busy: protected.
	as, err := dicomnet.Dial(ctx, scp.DICOMAddr, scClient("LOCAL_AE"))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "protection enabled", func() bool { s, _, _ := agent.history(); return len(s) == 1 })
	if s, m, _ := agent.history(); !s[0] || m[0] < 1 || m[0] > 2880 {
		t.Fatalf("first PUT: enabled %v for %d minutes", s[0], m[0])
	}
	scp.WaitMetric(t, "dicom_ingest_task_protected", 1, 5*time.Second)
	storeOne(t, as, "1.2.826.0.1.3680043.2.8.1.1")

	// Study after study, with pauses shorter than the hysteresis: no release.
	for i := range 3 {
		if err := as.Release(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(release / 4)
		if as, err = dicomnet.Dial(ctx, scp.DICOMAddr, scClient("LOCAL_AE")); err != nil {
			t.Fatal(err)
		}
		storeOne(t, as, fmt.Sprintf("1.2.826.0.1.3680043.2.8.1.%d", i+2))
	}
	if s, _, _ := agent.history(); len(s) != 1 {
		t.Fatalf("protection changed between back-to-back studies: %v", s)
	}

	// Idle: released, after the hysteresis. The task can go idle as soon
	// as it reads the release request, before the client's Release returns:
	// the hysteresis is measured from before the request.
	idle := time.Now()
	if err := as.Release(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "protection released", func() bool { s, _, _ := agent.history(); return len(s) == 2 })
	if waited := time.Since(idle); waited < release {
		t.Errorf("released %v after the task went idle, before the %v hysteresis", waited, release)
	}
	if s, m, _ := agent.history(); s[1] || m[1] != 0 {
		t.Errorf("release PUT: enabled %v, %d minutes", s[1], m[1])
	}
	scp.WaitMetric(t, "dicom_ingest_task_protected", 0, 5*time.Second)

	// The endpoint fails, then hangs: C-STOREs go on regardless.
	agent.set(true, nil)
	as, err = dicomnet.Dial(ctx, scp.DICOMAddr, scClient("LOCAL_AE"))
	if err != nil {
		t.Fatal(err)
	}
	storeOne(t, as, "1.2.826.0.1.3680043.2.8.1.9")
	testenv.Eventually(t, "failures counted", func() bool { return scp.Metric(t, "dicom_ingest_task_protection_failures_total") >= 1 })
	hang := make(chan struct{})
	agent.set(false, hang)
	_, _, calls := agent.history()
	testenv.Eventually(t, "a retry reaching the hung endpoint", func() bool { _, _, c := agent.history(); return c > calls })
	for i := range 5 {
		storeOne(t, as, fmt.Sprintf("1.2.826.0.1.3680043.2.8.2.%d", i+1))
	}
	if err := as.Release(ctx); err != nil {
		t.Fatal(err)
	}
	close(hang)
	agent.set(false, nil)
	if n := len(storedFiles(t, scp.DataDir)); n != 10 {
		t.Errorf("%d objects stored, want 10", n)
	}
}
