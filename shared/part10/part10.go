// Package part10 reads and writes the DICOM Part 10 file header (PS3.10 §7.1):
// the 128-byte preamble, the "DICM" prefix and the File Meta Information
// (group 0002, always Explicit VR Little Endian). The dataset that follows
// is never touched: writers append the received dataset bytes as they are,
// readers leave the stream positioned at the first dataset byte.
package part10

import (
	"errors"
	"fmt"
	"strings"

	"github.com/dicom-ingest/dicom-ingest/shared/version"
)

// Well-known transfer syntax UIDs used by the File Meta Information.
const (
	ImplicitVRLittleEndian = "1.2.840.10008.1.2"
	ExplicitVRLittleEndian = "1.2.840.10008.1.2.1"
)

// Defaults written when Meta leaves the implementation fields empty: this
// build's identity, the same as in A-ASSOCIATE user information.
const (
	DefaultImplementationClassUID    = version.ImplementationClassUID
	DefaultImplementationVersionName = version.ImplementationVersionName
)

// PreambleLen is the length of the preamble before "DICM".
const PreambleLen = 128

// Value length limits from PS3.5 Table 6.2-1.
const (
	maxUI = 64
	maxSH = 16
	maxAE = 16
)

// Errors returned by ReadMeta and Validate.
var (
	// ErrNotPart10 means the stream does not start with a 128-byte preamble
	// followed by "DICM".
	ErrNotPart10 = errors.New("part10: not a DICOM Part 10 stream")
	// ErrMalformedMeta means the File Meta Information could not be parsed
	// (bad VR, lying length, over the size limit, missing transfer syntax).
	ErrMalformedMeta = errors.New("part10: malformed file meta information")
	// ErrInvalidMeta is returned by Validate for values that cannot be
	// written as the standard requires.
	ErrInvalidMeta = errors.New("part10: invalid file meta value")
)

// Meta is the File Meta Information of one Part 10 file.
type Meta struct {
	// MediaStorageSOPClassUID (0002,0002) and MediaStorageSOPInstanceUID
	// (0002,0003): for a received object, the C-STORE command's Affected
	// SOP Class/Instance UID.
	MediaStorageSOPClassUID    string
	MediaStorageSOPInstanceUID string
	// TransferSyntaxUID (0002,0010): the transfer syntax the dataset is
	// encoded in (the presentation context's, for a received object).
	TransferSyntaxUID string
	// ImplementationClassUID (0002,0012) and ImplementationVersionName
	// (0002,0013). Empty values are written as the package defaults.
	ImplementationClassUID    string
	ImplementationVersionName string
	// SourceApplicationEntityTitle (0002,0016): the AE that wrote the
	// file's content (PS3.10 Table 7.1-1), for a received object ours, the
	// called AE; files written before (0002,0017) was, by us and by others,
	// name the calling AE here (SenderAE). Omitted when empty.
	SourceApplicationEntityTitle string
	// SendingApplicationEntityTitle (0002,0017) and
	// ReceivingApplicationEntityTitle (0002,0018): the AEs that sent and
	// received the file's content over a network, for a received object
	// the calling and the called AE. Omitted when empty.
	SendingApplicationEntityTitle   string
	ReceivingApplicationEntityTitle string
	// Unordered is set by ReadMeta when an element of the group came after
	// one with a greater tag (PS3.5 §7.1 orders them): read on, as the data
	// set's are (dataset.Scanner.Unordered); Misplaced is the first such
	// element's tag, After the tag before it. The writer ignores them: it
	// writes the group in order.
	Unordered        bool
	Misplaced, After uint32
}

// SenderAE is the AE title that sent the file's content over a network as
// the file names it: (0002,0017) Sending Application Entity Title, or, in a
// file that names neither a Sending nor a Receiving AE (written before they
// were defined, or before we wrote them), (0002,0016) Source Application
// Entity Title, which such files use for the sender. A file with a
// Receiving AE and no Sending AE names no sender (ours, for a blank calling
// AE): its Source AE is the AE that wrote it.
func (m Meta) SenderAE() string {
	if ae := trimText(m.SendingApplicationEntityTitle); ae != "" || trimText(m.ReceivingApplicationEntityTitle) != "" {
		return ae
	}
	return trimText(m.SourceApplicationEntityTitle)
}

// Validate reports whether m can be written as is: mandatory UIDs present,
// every UID at most 64 characters of digits and dots, the version name and
// AE title at most 16 characters without control characters or backslashes.
func (m Meta) Validate() error {
	uids := []struct{ name, v string }{
		{"media storage SOP class UID", m.MediaStorageSOPClassUID},
		{"media storage SOP instance UID", m.MediaStorageSOPInstanceUID},
		{"transfer syntax UID", m.TransferSyntaxUID},
		{"implementation class UID", m.implClassUID()},
	}
	for _, u := range uids {
		if !validUIDChars(trimUID(u.v)) {
			return fmt.Errorf("%w: %s %q", ErrInvalidMeta, u.name, clip(u.v))
		}
	}
	if v := trimText(m.implVersionName()); len(v) > maxSH || !validText(v) {
		return fmt.Errorf("%w: implementation version name %q", ErrInvalidMeta, clip(v))
	}
	for _, ae := range []struct{ name, v string }{
		{"source", m.SourceApplicationEntityTitle}, {"sending", m.SendingApplicationEntityTitle}, {"receiving", m.ReceivingApplicationEntityTitle},
	} {
		if v := trimText(ae.v); len(v) > maxAE || !validText(v) {
			return fmt.Errorf("%w: %s AE title %q", ErrInvalidMeta, ae.name, clip(v))
		}
	}
	return nil
}

func (m Meta) implClassUID() string {
	if trimUID(m.ImplementationClassUID) == "" {
		return DefaultImplementationClassUID
	}
	return m.ImplementationClassUID
}

func (m Meta) implVersionName() string {
	if trimText(m.ImplementationVersionName) == "" {
		return DefaultImplementationVersionName
	}
	return m.ImplementationVersionName
}

// trimUID strips the padding a UID may carry on the wire (trailing NUL or
// space) and stray leading spaces.
func trimUID(s string) string {
	return strings.Trim(s, " \x00")
}

// trimText strips leading/trailing spaces and trailing NULs, which are not
// significant in AE and SH values.
func trimText(s string) string {
	return strings.Trim(s, " \x00")
}

func validUIDChars(s string) bool {
	if len(s) == 0 || len(s) > maxUI {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '.' && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

func validText(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c == '\\' {
			return false
		}
	}
	return true
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
