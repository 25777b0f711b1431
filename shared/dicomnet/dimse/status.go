// Package dimse implements the DIMSE message layer (PS3.7): the command set codec (always Implicit VR Little
// Endian, group 0000) and the status codes carried in responses.
package dimse

import (
	"fmt"
	"regexp"
	"strings"
)

// Status is a DIMSE status (0000,0900) with an optional error comment (0000,0902). It implements error so a
// C-STORE handler can return it; Comment is truncated to 64 characters when sent.
type Status struct {
	Code    uint16
	Comment string
}

// Status codes (PS3.4 Annex B.2.3, PS3.7 Annex C; the 01xx and 02xx codes are DIMSE-N's).
const (
	StatusSuccess                            uint16 = 0x0000
	StatusCancel                             uint16 = 0xFE00
	StatusPending                            uint16 = 0xFF00
	StatusSOPClassNotSupported               uint16 = 0x0122
	StatusNoSuchSOPInstance                  uint16 = 0x0112
	StatusNoSuchEventType                    uint16 = 0x0113
	StatusNoSuchArgument                     uint16 = 0x0114
	StatusInvalidArgumentValue               uint16 = 0x0115
	StatusInvalidObjectInstance              uint16 = 0x0117
	StatusNoSuchSOPClass                     uint16 = 0x0118
	StatusClassInstanceConflict              uint16 = 0x0119
	StatusNoSuchAction                       uint16 = 0x0123
	StatusResourceLimitation                 uint16 = 0x0213
	StatusNotAuthorized                      uint16 = 0x0124
	StatusProcessingFailure                  uint16 = 0x0110
	StatusDuplicateInvocation                uint16 = 0x0210
	StatusUnrecognizedOperation              uint16 = 0x0211
	StatusMistypedArgument                   uint16 = 0x0212
	StatusOutOfResources                     uint16 = 0xA700
	StatusDataSetDoesNotMatchSOPClass        uint16 = 0xA900
	StatusCannotUnderstand                   uint16 = 0xC000
	StatusCoercion                           uint16 = 0xB000
	StatusElementsDiscarded                  uint16 = 0xB006
	StatusDataSetDoesNotMatchSOPClassWarning uint16 = 0xB007
)

// MaxCommentLen is the longest error comment sent (0000,0902 is LO).
const MaxCommentLen = 64

// Error describes the status; it makes Status usable as an error.
func (s Status) Error() string {
	if s.Comment != "" {
		return fmt.Sprintf("dimse: status 0x%04X (%s): %s", s.Code, StatusText(s.Code), s.Comment)
	}
	return fmt.Sprintf("dimse: status 0x%04X (%s)", s.Code, StatusText(s.Code))
}

// toldStatus is how Error begins a status: its code and meaning, in our words; a comment follows it after ": ".
var toldStatus = regexp.MustCompile(`dimse: status 0x[0-9A-F]{4} \([^()]*\)`)

// CommentNotKept replaces the Error Comment WithoutComments cuts.
const CommentNotKept = ", with an Error Comment not kept (the peer's own text)"

// WithoutComments is msg, an error's message, with the Error Comment of the first status it tells (Error) with one
// cut, and all that follows it: a peer's comment is its own free text, of any length (not every peer holds to LO's
// 64 characters), naming what it likes (UIDs, a patient's name), and a status wraps nothing, so its comment runs to
// the end of msg. A status told without a comment before it (an error joined to another) does not end the search.
// The status's code and meaning stay, and CommentNotKept says there was one. A message of no status with a comment
// is msg.
func WithoutComments(msg string) string {
	for _, loc := range toldStatus.FindAllStringIndex(msg, -1) {
		if strings.HasPrefix(msg[loc[1]:], ": ") {
			return msg[:loc[1]] + CommentNotKept
		}
	}
	return msg
}

// IsSuccess reports status 0000.
func (s Status) IsSuccess() bool { return s.Code == StatusSuccess }

// IsWarning reports a warning: the operation was performed (0001, Bxxx, 0107, 0116).
func (s Status) IsWarning() bool {
	return s.Code == 0x0001 || s.Code&0xF000 == 0xB000 || s.Code == 0x0107 || s.Code == 0x0116
}

// IsPending reports FF00/FF01.
func (s Status) IsPending() bool { return s.Code == 0xFF00 || s.Code == 0xFF01 }

// IsFailure reports anything that is neither success, warning, pending nor cancel.
func (s Status) IsFailure() bool {
	return !s.IsSuccess() && !s.IsWarning() && !s.IsPending() && s.Code != StatusCancel
}

// TruncatedComment is Comment cut to MaxCommentLen bytes, as it goes on the wire.
func (s Status) TruncatedComment() string {
	if len(s.Comment) > MaxCommentLen {
		return s.Comment[:MaxCommentLen]
	}
	return s.Comment
}

// StatusText names a status code.
func StatusText(code uint16) string {
	switch {
	case code == StatusSuccess:
		return "Success"
	case code == StatusCancel:
		return "Cancel"
	case code == 0xFF00 || code == 0xFF01:
		return "Pending"
	case code == StatusSOPClassNotSupported:
		return "Refused: SOP Class not supported"
	case code == StatusNotAuthorized:
		return "Refused: Not authorized"
	case code == StatusProcessingFailure:
		return "Processing failure"
	case code == StatusDuplicateInvocation:
		return "Duplicate invocation"
	case code == StatusUnrecognizedOperation:
		return "Unrecognized operation"
	case code == StatusMistypedArgument:
		return "Mistyped argument"
	case code == StatusNoSuchSOPInstance:
		return "No such SOP Instance"
	case code == StatusNoSuchEventType:
		return "No such event type"
	case code == StatusNoSuchArgument:
		return "No such argument"
	case code == StatusInvalidArgumentValue:
		return "Invalid argument value"
	case code == StatusInvalidObjectInstance:
		return "Invalid object instance"
	case code == StatusNoSuchSOPClass:
		return "No such SOP Class"
	case code == StatusClassInstanceConflict:
		return "Class-instance conflict"
	case code == StatusNoSuchAction:
		return "No such action"
	case code == StatusResourceLimitation:
		return "Resource limitation"
	case code&0xFF00 == 0xA700:
		return "Refused: Out of resources"
	case code&0xFF00 == 0xA900:
		return "Error: Data Set does not match SOP Class"
	case code&0xF000 == 0xC000:
		return "Error: Cannot understand"
	case code == StatusCoercion:
		return "Warning: Coercion of data elements"
	case code == StatusElementsDiscarded:
		return "Warning: Elements discarded"
	case code == StatusDataSetDoesNotMatchSOPClassWarning:
		return "Warning: Data Set does not match SOP Class"
	case code&0xF000 == 0xB000:
		return "Warning"
	}
	return "Failure"
}
