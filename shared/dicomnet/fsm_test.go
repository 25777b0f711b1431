package dicomnet

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// standardTable is PS3.8 Table 9-10 ("DICOM Upper Layer Protocol State Transition Table"), transcribed from the
// standard (not from transitionTable, which it checks) and laid out as the standard prints it: one row per event,
// one column per state Sta1…Sta13, "-" where the standard leaves the cell empty. It was checked cell by cell
// against pynetdicom's (fsm.py), which matches it exactly, and DCMTK's (dcmnet/libsrc/dulfsm.cc), which matches
// it but for two cells of its own (Evt18 in Sta5 and Sta7, AA-2, its requestor-side timeouts). Evt18 in Sta13 is AA-2: ARTIM expiring while we wait for the peer to close means we close
// (PS3.8 §9.1.4 d); AR-5 would only stop the timer and leave the connection open.
const standardTable = `
       Sta1 Sta2 Sta3 Sta4 Sta5 Sta6 Sta7 Sta8 Sta9 Sta10 Sta11 Sta12 Sta13
Evt1   AE-1 -    -    -    -    -    -    -    -    -     -     -     -
Evt2   -    -    -    AE-2 -    -    -    -    -    -     -     -     -
Evt3   -    AA-1 AA-8 -    AE-3 AA-8 AA-8 AA-8 AA-8 AA-8  AA-8  AA-8  AA-6
Evt4   -    AA-1 AA-8 -    AE-4 AA-8 AA-8 AA-8 AA-8 AA-8  AA-8  AA-8  AA-6
Evt5   AE-5 -    -    -    -    -    -    -    -    -     -     -     -
Evt6   -    AE-6 AA-8 -    AA-8 AA-8 AA-8 AA-8 AA-8 AA-8  AA-8  AA-8  AA-7
Evt7   -    -    AE-7 -    -    -    -    -    -    -     -     -     -
Evt8   -    -    AE-8 -    -    -    -    -    -    -     -     -     -
Evt9   -    -    -    -    -    DT-1 -    AR-7 -    -     -     -     -
Evt10  -    AA-1 AA-8 -    AA-8 DT-2 AR-6 AA-8 AA-8 AA-8  AA-8  AA-8  AA-6
Evt11  -    -    -    -    -    AR-1 -    -    -    -     -     -     -
Evt12  -    AA-1 AA-8 -    AA-8 AR-2 AR-8 AA-8 AA-8 AA-8  AA-8  AA-8  AA-6
Evt13  -    AA-1 AA-8 -    AA-8 AA-8 AR-3 AA-8 AA-8 AR-10 AR-3  AA-8  AA-6
Evt14  -    -    -    -    -    -    -    AR-4 AR-9 -     -     AR-4  -
Evt15  -    -    AA-1 AA-2 AA-1 AA-1 AA-1 AA-1 AA-1 AA-1  AA-1  AA-1  -
Evt16  -    AA-2 AA-3 -    AA-3 AA-3 AA-3 AA-3 AA-3 AA-3  AA-3  AA-3  AA-2
Evt17  -    AA-5 AA-4 AA-4 AA-4 AA-4 AA-4 AA-4 AA-4 AA-4  AA-4  AA-4  AR-5
Evt18  -    AA-2 -    -    -    -    -    -    -    -     -     -     AA-2
Evt19  -    AA-1 AA-8 -    AA-8 AA-8 AA-8 AA-8 AA-8 AA-8  AA-8  AA-8  AA-7
`

func parseStandardTable(t *testing.T) map[event]map[state]string {
	out := map[event]map[state]string{}
	lines := strings.Split(strings.TrimSpace(standardTable), "\n")
	if hdr := strings.Fields(lines[0]); len(hdr) != numStates || hdr[0] != "Sta1" || hdr[numStates-1] != "Sta13" {
		t.Fatalf("bad header %q", lines[0])
	}
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) != 1+numStates {
			t.Fatalf("bad row %q", line)
		}
		var e int
		fmt.Sscanf(f[0], "Evt%d", &e)
		out[event(e)] = map[state]string{}
		for i, a := range f[1:] {
			out[event(e)][state(i+1)] = a
		}
	}
	return out
}

// fxRecorder records the effects of actions.
type fxRecorder struct {
	log        []string
	acceptable bool
	requestor  bool
}

func (r *fxRecorder) add(s string)            { r.log = append(r.log, s) }
func (r *fxRecorder) startARTIM()             { r.add("startARTIM") }
func (r *fxRecorder) stopARTIM()              { r.add("stopARTIM") }
func (r *fxRecorder) closeTransport()         { r.add("close") }
func (r *fxRecorder) connectTransport() error { r.add("connect"); return nil }
func (r *fxRecorder) sendAssociateRQ() error  { r.add("send RQ"); return nil }
func (r *fxRecorder) sendAssociateAC() error  { r.add("send AC"); return nil }
func (r *fxRecorder) sendAssociateRJ() error  { r.add("send RJ"); return nil }
func (r *fxRecorder) sendPData() error        { r.add("send P-DATA"); return nil }
func (r *fxRecorder) sendReleaseRQ() error    { r.add("send RQ-release"); return nil }
func (r *fxRecorder) sendReleaseRP() error    { r.add("send RP"); return nil }
func (r *fxRecorder) sendAbort(source, reason byte) error {
	r.add(fmt.Sprintf("send ABORT %d %d", source, reason))
	return nil
}
func (r *fxRecorder) associateAcceptable() bool { return r.acceptable }
func (r *fxRecorder) isRequestor() bool         { return r.requestor }

// wantEffects is what PS3.8 §9.2 says each action does to the transport, and the state it leads to. The
// primitives issued to the local user are not effects: fire returns the action, and the association acts on it.
var wantEffects = map[string]struct {
	effects []string
	next    state
}{
	"AE-1":  {[]string{"connect"}, sta4},
	"AE-2":  {[]string{"send RQ"}, sta5},
	"AE-3":  {nil, sta6},
	"AE-4":  {[]string{"close"}, sta1},
	"AE-5":  {[]string{"startARTIM"}, sta2},
	"AE-6":  {[]string{"stopARTIM"}, sta3}, // acceptable RQ; the other branch is tested below
	"AE-7":  {[]string{"send AC"}, sta6},
	"AE-8":  {[]string{"send RJ", "startARTIM"}, sta13},
	"DT-1":  {[]string{"send P-DATA"}, sta6},
	"DT-2":  {nil, sta6},
	"AR-1":  {[]string{"send RQ-release"}, sta7},
	"AR-2":  {nil, sta8},
	"AR-3":  {[]string{"close"}, sta1},
	"AR-4":  {[]string{"send RP", "startARTIM"}, sta13},
	"AR-5":  {[]string{"stopARTIM"}, sta1},
	"AR-6":  {nil, sta7},
	"AR-7":  {[]string{"send P-DATA"}, sta8},
	"AR-8":  {nil, sta10}, // acceptor side of a release collision
	"AR-9":  {[]string{"send RP"}, sta11},
	"AR-10": {nil, sta12},
	"AA-1":  {[]string{"send ABORT 0 0", "startARTIM"}, sta13},
	"AA-2":  {[]string{"stopARTIM", "close"}, sta1},
	"AA-3":  {[]string{"close"}, sta1},
	"AA-4":  {nil, sta1},
	"AA-5":  {[]string{"stopARTIM"}, sta1},
	"AA-6":  {nil, sta13},
	"AA-7":  {[]string{"send ABORT 2 2"}, sta13},
	"AA-8":  {[]string{"send ABORT 2 2", "startARTIM"}, sta13},
}

// TestEveryStateEventPair fires every event in every state and checks the action, its effects and the next
// state against the standard. Pairs the standard leaves undefined must abort (AA-8).
func TestEveryStateEventPair(t *testing.T) {
	std := parseStandardTable(t)
	for e := event(1); e <= numEvents; e++ {
		for s := state(1); s <= numStates; s++ {
			t.Run(fmt.Sprintf("%s_%s", s, e), func(t *testing.T) {
				want := std[e][s]
				if _, defined := lookup(s, e); defined != (want != "-") {
					t.Fatalf("transitionTable defines %s/%s = %v, standard: %q", s, e, defined, want)
				}
				if want == "-" {
					want = "AA-8"
				}
				rec := &fxRecorder{acceptable: true}
				m := machine{state: s, fx: rec}
				act, err := m.fire(e)
				if err != nil {
					t.Fatal(err)
				}
				if act.String() != want {
					t.Fatalf("action %s, want %s", act, want)
				}
				w := wantEffects[want]
				if d := cmp.Diff(w.effects, rec.log); d != "" {
					t.Errorf("effects (-want +got):\n%s", d)
				}
				if m.state != w.next {
					t.Errorf("next state %s, want %s", m.state, w.next)
				}
			})
		}
	}
}

func TestConditionalActions(t *testing.T) {
	t.Run("AE-6 unacceptable RQ", func(t *testing.T) {
		rec := &fxRecorder{acceptable: false}
		m := machine{state: sta2, fx: rec}
		m.fire(evt6)
		if d := cmp.Diff([]string{"stopARTIM", "send RJ", "startARTIM"}, rec.log); d != "" || m.state != sta13 {
			t.Errorf("state %s effects %s", m.state, d)
		}
	})
	t.Run("AR-8 requestor", func(t *testing.T) {
		m := machine{state: sta7, fx: &fxRecorder{requestor: true}}
		m.fire(evt12)
		if m.state != sta9 {
			t.Errorf("state %s, want Sta9", m.state)
		}
	})
	t.Run("AA-8 reason", func(t *testing.T) {
		rec := &fxRecorder{}
		m := machine{state: sta6, fx: rec, abortReason: 1}
		m.fire(evt19)
		if rec.log[0] != "send ABORT 2 1" {
			t.Errorf("effects %v", rec.log)
		}
	})
}

func TestActionNames(t *testing.T) {
	seen := map[string]bool{}
	for a := ae1; a <= aa8; a++ {
		n := a.String()
		if seen[n] || !strings.Contains(n, "-") {
			t.Errorf("action %d name %q", a, n)
		}
		seen[n] = true
		if _, ok := wantEffects[n]; !ok {
			t.Errorf("no expected effects for %s", n)
		}
	}
}
