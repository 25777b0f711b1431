package dicomnet

import (
	"errors"
	"fmt"
)

// ErrServerClosed is returned by Serve and ListenAndServe after Shutdown or Close.
var ErrServerClosed = errors.New("dicomnet: server closed")

// RejectError is an A-ASSOCIATE-RJ: returned by Server.Accept to refuse an association, and by Dial when the
// peer refuses one.
type RejectError struct{ Result, Source, Reason byte }

// Standard rejections (PS3.8 Table 9-21).
var (
	RejectNoReason               = &RejectError{1, 1, 1}
	RejectApplicationContext     = &RejectError{1, 1, 2}
	RejectCallingAENotRecognized = &RejectError{1, 1, 3}
	RejectCalledAENotRecognized  = &RejectError{1, 1, 7}
	RejectProtocolVersion        = &RejectError{1, 2, 2}
	RejectTemporaryCongestion    = &RejectError{2, 3, 1}
	RejectTooManyAssociations    = &RejectError{2, 3, 2}
)

// Error describes the rejection in DCMTK's words.
func (e *RejectError) Error() string { return "dicomnet: association rejected: " + e.words() }

// words are the result, source and reason in DCMTK's words, and the codes.
func (e *RejectError) words() string {
	result := "Rejected Permanent"
	if e.Result == 2 {
		result = "Rejected Transient"
	}
	source, reason := "", ""
	switch e.Source {
	case 1:
		source = "Service User"
		switch e.Reason {
		case 1:
			reason = "No Reason"
		case 2:
			reason = "App Context Name not supported"
		case 3:
			reason = "Calling AE Title Not Recognized"
		case 7:
			reason = "Called AE Title Not Recognized"
		}
	case 2:
		source = "Service Provider (ACSE)"
		switch e.Reason {
		case 1:
			reason = "No Reason"
		case 2:
			reason = "Protocol Version Not Supported"
		}
	case 3:
		source = "Service Provider (Presentation)"
		switch e.Reason {
		case 1:
			reason = "Temporary Congestion"
		case 2:
			reason = "Local Limit Exceeded"
		}
	}
	if source == "" {
		source = fmt.Sprintf("source %d", e.Source)
	}
	if reason == "" {
		reason = fmt.Sprintf("reason %d", e.Reason)
	}
	return fmt.Sprintf("%s, %s, %s (%02x %02x %02x)", result, source, reason, e.Result, e.Source, e.Reason)
}

// Is makes errors.Is(err, RejectTooManyAssociations) compare by value.
func (e *RejectError) Is(target error) bool {
	t, ok := target.(*RejectError)
	return ok && t != nil && *t == *e
}

// AbortError reports an A-ABORT received from the peer.
type AbortError struct{ Source, Reason byte }

// Error says that the peer aborted, with the source and, from a service
// provider, the reason in PS3.8's words (Table 9-26), and the codes: the
// audit trail's reason for the association's end.
func (e *AbortError) Error() string {
	var words string
	switch e.Source {
	case 0:
		words = "Service User" // the reason is not significant
	case 2:
		reason, ok := map[byte]string{0: "Reason Not Specified", 1: "Unrecognized PDU", 2: "Unexpected PDU",
			4: "Unrecognized PDU Parameter", 5: "Unexpected PDU Parameter", 6: "Invalid PDU Parameter Value"}[e.Reason]
		if !ok {
			reason = fmt.Sprintf("reason %d", e.Reason)
		}
		words = "Service Provider, " + reason
	default:
		words = fmt.Sprintf("source %d, reason %d", e.Source, e.Reason)
	}
	return fmt.Sprintf("dicomnet: association aborted by the peer: %s (%02x %02x)", words, e.Source, e.Reason)
}

// ErrAborted is matched (errors.Is) by every *AbortError.
var ErrAborted = errors.New("dicomnet: association aborted")

// Is makes errors.Is(err, ErrAborted) true for every abort.
func (e *AbortError) Is(target error) bool { return target == ErrAborted }
