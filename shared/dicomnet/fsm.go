package dicomnet

import "fmt"

// This file holds the DICOM Upper Layer state machine of PS3.8 §9.2 (Table 9-10) as data. The names are the
// standard's: states Sta1…Sta13, events Evt1…Evt19, actions AE-1…AE-8, DT-1/2, AR-1…AR-10, AA-1…AA-8.
// Both sides run on it: the server (acceptor, association.go) and the client (requestor, client.go) fire events
// as PDUs arrive, timers expire or their user asks, and perform the action the table names; a (state, event) pair
// absent from the table is a protocol error handled as AA-8 (abort, provider-initiated).
//
// The machine performs an action's effects on the transport (send a PDU, start or stop ARTIM, close). The
// primitive an action issues to the local user (A-ASSOCIATE indication, P-DATA indication, A-RELEASE
// indication, A-ABORT or A-P-ABORT indication) is the action itself, returned by fire: the association acts on it
// (association.go, step) and, where the user answers (A-ASSOCIATE response, A-RELEASE response), returns the
// answer as the next event.

type state uint8

const (
	sta1  state = iota + 1 // Idle
	sta2                   // Transport connection open (awaiting A-ASSOCIATE-RQ PDU)
	sta3                   // Awaiting local A-ASSOCIATE response primitive
	sta4                   // Awaiting transport connection opening to complete
	sta5                   // Awaiting A-ASSOCIATE-AC or A-ASSOCIATE-RJ PDU
	sta6                   // Association established and ready for data transfer
	sta7                   // Awaiting A-RELEASE-RP PDU
	sta8                   // Awaiting local A-RELEASE response primitive
	sta9                   // Release collision requestor side; awaiting A-RELEASE response primitive
	sta10                  // Release collision acceptor side; awaiting A-RELEASE-RP PDU
	sta11                  // Release collision requestor side; awaiting A-RELEASE-RP PDU
	sta12                  // Release collision acceptor side; awaiting A-RELEASE response primitive
	sta13                  // Awaiting transport connection close indication
)

const numStates = 13

func (s state) String() string { return fmt.Sprintf("Sta%d", uint8(s)) }

type event uint8

const (
	evt1  event = iota + 1 // A-ASSOCIATE request (local user)
	evt2                   // Transport connect confirmation (local transport service)
	evt3                   // A-ASSOCIATE-AC PDU (received on transport connection)
	evt4                   // A-ASSOCIATE-RJ PDU (received on transport connection)
	evt5                   // Transport connection indication (local transport service)
	evt6                   // A-ASSOCIATE-RQ PDU (received on transport connection)
	evt7                   // A-ASSOCIATE response primitive (accept)
	evt8                   // A-ASSOCIATE response primitive (reject)
	evt9                   // P-DATA request primitive
	evt10                  // P-DATA-TF PDU
	evt11                  // A-RELEASE request primitive
	evt12                  // A-RELEASE-RQ PDU (received on open transport connection)
	evt13                  // A-RELEASE-RP PDU (received on transport connection)
	evt14                  // A-RELEASE response primitive
	evt15                  // A-ABORT request primitive
	evt16                  // A-ABORT PDU (received on open transport connection)
	evt17                  // Transport connection closed indication (local transport service)
	evt18                  // ARTIM timer expired (Association reject/release timer)
	evt19                  // Unrecognized or invalid PDU received
)

const numEvents = 19

func (e event) String() string { return fmt.Sprintf("Evt%d", uint8(e)) }

type action uint8

const (
	actNone action = iota
	ae1            // Issue TRANSPORT CONNECT request primitive to local transport service
	ae2            // Send A-ASSOCIATE-RQ-PDU
	ae3            // Issue A-ASSOCIATE confirmation (accept) primitive
	ae4            // Issue A-ASSOCIATE confirmation (reject) primitive and close transport connection
	ae5            // Issue Transport connection response primitive; start ARTIM timer
	ae6            // Stop ARTIM timer and if A-ASSOCIATE-RQ acceptable by service-provider issue A-ASSOCIATE indication, otherwise send A-ASSOCIATE-RJ-PDU and start ARTIM
	ae7            // Send A-ASSOCIATE-AC PDU
	ae8            // Send A-ASSOCIATE-RJ PDU and start ARTIM timer
	dt1            // Send P-DATA-TF PDU
	dt2            // Send P-DATA indication primitive
	ar1            // Send A-RELEASE-RQ PDU
	ar2            // Issue A-RELEASE indication primitive
	ar3            // Issue A-RELEASE confirmation primitive, and close transport connection
	ar4            // Issue A-RELEASE-RP PDU and start ARTIM timer
	ar5            // Stop ARTIM timer
	ar6            // Issue P-DATA indication
	ar7            // Issue P-DATA-TF PDU
	ar8            // Issue A-RELEASE indication (release collision)
	ar9            // Send A-RELEASE-RP PDU
	ar10           // Issue A-RELEASE confirmation primitive
	aa1            // Send A-ABORT PDU (service-user source) and start (or restart) ARTIM timer
	aa2            // Stop ARTIM timer if running. Close transport connection
	aa3            // Issue A-ABORT or A-P-ABORT indication and close transport connection
	aa4            // Issue A-P-ABORT indication primitive
	aa5            // Stop ARTIM timer
	aa6            // Ignore PDU
	aa7            // Send A-ABORT PDU
	aa8            // Send A-ABORT PDU (service-provider source), issue an A-P-ABORT indication, and start ARTIM timer
)

var actionNames = [...]string{actNone: "none",
	ae1: "AE-1", ae2: "AE-2", ae3: "AE-3", ae4: "AE-4", ae5: "AE-5", ae6: "AE-6", ae7: "AE-7", ae8: "AE-8",
	dt1: "DT-1", dt2: "DT-2",
	ar1: "AR-1", ar2: "AR-2", ar3: "AR-3", ar4: "AR-4", ar5: "AR-5", ar6: "AR-6", ar7: "AR-7", ar8: "AR-8", ar9: "AR-9", ar10: "AR-10",
	aa1: "AA-1", aa2: "AA-2", aa3: "AA-3", aa4: "AA-4", aa5: "AA-5", aa6: "AA-6", aa7: "AA-7", aa8: "AA-8"}

func (a action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// transitionTable is PS3.8 Table 9-10: the action for each (event, state) pair that the standard defines.
var transitionTable = map[event]map[state]action{
	evt1:  {sta1: ae1},
	evt2:  {sta4: ae2},
	evt3:  {sta2: aa1, sta3: aa8, sta5: ae3, sta6: aa8, sta7: aa8, sta8: aa8, sta9: aa8, sta10: aa8, sta11: aa8, sta12: aa8, sta13: aa6},
	evt4:  {sta2: aa1, sta3: aa8, sta5: ae4, sta6: aa8, sta7: aa8, sta8: aa8, sta9: aa8, sta10: aa8, sta11: aa8, sta12: aa8, sta13: aa6},
	evt5:  {sta1: ae5},
	evt6:  {sta2: ae6, sta3: aa8, sta5: aa8, sta6: aa8, sta7: aa8, sta8: aa8, sta9: aa8, sta10: aa8, sta11: aa8, sta12: aa8, sta13: aa7},
	evt7:  {sta3: ae7},
	evt8:  {sta3: ae8},
	evt9:  {sta6: dt1, sta8: ar7},
	evt10: {sta2: aa1, sta3: aa8, sta5: aa8, sta6: dt2, sta7: ar6, sta8: aa8, sta9: aa8, sta10: aa8, sta11: aa8, sta12: aa8, sta13: aa6},
	evt11: {sta6: ar1},
	evt12: {sta2: aa1, sta3: aa8, sta5: aa8, sta6: ar2, sta7: ar8, sta8: aa8, sta9: aa8, sta10: aa8, sta11: aa8, sta12: aa8, sta13: aa6},
	evt13: {sta2: aa1, sta3: aa8, sta5: aa8, sta6: aa8, sta7: ar3, sta8: aa8, sta9: aa8, sta10: ar10, sta11: ar3, sta12: aa8, sta13: aa6},
	evt14: {sta8: ar4, sta9: ar9, sta12: ar4},
	evt15: {sta3: aa1, sta4: aa2, sta5: aa1, sta6: aa1, sta7: aa1, sta8: aa1, sta9: aa1, sta10: aa1, sta11: aa1, sta12: aa1},
	evt16: {sta2: aa2, sta3: aa3, sta5: aa3, sta6: aa3, sta7: aa3, sta8: aa3, sta9: aa3, sta10: aa3, sta11: aa3, sta12: aa3, sta13: aa2},
	evt17: {sta2: aa5, sta3: aa4, sta4: aa4, sta5: aa4, sta6: aa4, sta7: aa4, sta8: aa4, sta9: aa4, sta10: aa4, sta11: aa4, sta12: aa4, sta13: ar5},
	evt18: {sta2: aa2, sta13: aa2},
	evt19: {sta2: aa1, sta3: aa8, sta5: aa8, sta6: aa8, sta7: aa8, sta8: aa8, sta9: aa8, sta10: aa8, sta11: aa8, sta12: aa8, sta13: aa7},
}

// lookup returns the action for (s, e) and whether the standard defines the pair.
func lookup(s state, e event) (action, bool) {
	a, ok := transitionTable[e][s]
	return a, ok
}

// effects are what actions do to the outside world. The server implements them over a socket; tests record them.
type effects interface {
	startARTIM()
	stopARTIM()
	closeTransport()
	connectTransport() error
	// sendAssociateRQ/AC/RJ, sendPData, sendReleaseRQ/RP and sendAbort write one PDU.
	sendAssociateRQ() error
	sendAssociateAC() error
	sendAssociateRJ() error
	sendPData() error
	sendReleaseRQ() error
	sendReleaseRP() error
	sendAbort(source, reason byte) error
	// associateAcceptable is the service-provider check of AE-6 (protocol version, application context); when
	// false it has prepared the A-ASSOCIATE-RJ to send.
	associateAcceptable() bool
	// isRequestor tells AR-8 which side of a release collision we are.
	isRequestor() bool
}

// machine is the per-association upper layer state.
type machine struct {
	state state
	fx    effects
	// abortReason is the provider reason sent by AA-8 (default 2, unexpected PDU; callers set 1 for an
	// unrecognized PDU or 6 for an invalid parameter before firing evt19).
	abortReason byte
}

// fire performs the transition for e from the current state and returns the action taken. A pair the standard
// does not define is treated as AA-8: the association is aborted by the provider.
func (m *machine) fire(e event) (action, error) {
	a, ok := lookup(m.state, e)
	if !ok {
		a = aa8
	}
	next, err := m.perform(a)
	m.state = next
	m.abortReason = 0
	return a, err
}

// perform runs action a and returns the next state.
func (m *machine) perform(a action) (state, error) {
	fx := m.fx
	switch a {
	case ae1:
		return sta4, fx.connectTransport()
	case ae2:
		return sta5, fx.sendAssociateRQ()
	case ae3:
		return sta6, nil
	case ae4:
		fx.closeTransport()
		return sta1, nil
	case ae5:
		fx.startARTIM()
		return sta2, nil
	case ae6:
		fx.stopARTIM()
		if fx.associateAcceptable() {
			return sta3, nil
		}
		err := fx.sendAssociateRJ()
		fx.startARTIM()
		return sta13, err
	case ae7:
		return sta6, fx.sendAssociateAC()
	case ae8:
		err := fx.sendAssociateRJ()
		fx.startARTIM()
		return sta13, err
	case dt1:
		return sta6, fx.sendPData()
	case dt2:
		return sta6, nil
	case ar1:
		return sta7, fx.sendReleaseRQ()
	case ar2:
		return sta8, nil
	case ar3:
		fx.closeTransport()
		return sta1, nil
	case ar4:
		err := fx.sendReleaseRP()
		fx.startARTIM()
		return sta13, err
	case ar5:
		fx.stopARTIM()
		return sta1, nil
	case ar6:
		return sta7, nil
	case ar7:
		return sta8, fx.sendPData()
	case ar8:
		if fx.isRequestor() {
			return sta9, nil
		}
		return sta10, nil
	case ar9:
		return sta11, fx.sendReleaseRP()
	case ar10:
		return sta12, nil
	case aa1:
		err := fx.sendAbort(0, 0)
		fx.startARTIM()
		return sta13, err
	case aa2:
		fx.stopARTIM()
		fx.closeTransport()
		return sta1, nil
	case aa3:
		fx.closeTransport()
		return sta1, nil
	case aa4:
		return sta1, nil
	case aa5:
		fx.stopARTIM()
		return sta1, nil
	case aa6:
		return sta13, nil
	case aa7:
		return sta13, fx.sendAbort(2, m.reason())
	case aa8:
		err := fx.sendAbort(2, m.reason())
		fx.startARTIM()
		return sta13, err
	}
	return m.state, fmt.Errorf("dicomnet: state machine: unknown action %d", a)
}

func (m *machine) reason() byte { return providerAbortReason(m.abortReason) }

// providerAbortReason is the reason an AA-7 or AA-8 A-ABORT carries: the one given, by default 2 (unexpected PDU).
func providerAbortReason(given byte) byte {
	if given != 0 {
		return given
	}
	return 2
}
