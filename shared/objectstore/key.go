package objectstore

import (
	"errors"
	"fmt"
	"strings"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/internal/crcnvme"
)

// ErrUnsafeUID is returned by Key when a UID could not be used in a key.
var ErrUnsafeUID = errors.New("objectstore: UID not usable in an object key")

// Placeholders used in keys when the dataset header did not carry a usable
// Study or Series Instance UID. The object is still stored (validation later
// quarantines it); only the SOP Instance UID is mandatory.
const (
	UnknownStudy  = "unknown-study"
	UnknownSeries = "unknown-series"
)

// Key returns the key of an object under the store root:
//
//	incoming/<yyyy>/<mm>/<dd>/<study>/<series>/<sop>.dcm
//
// with the date of ReceivedAt in UTC. Only key-safe UIDs are ever used: a UID
// is key-safe when it is 1–64 characters of digits and dots with no empty
// component, so no key can escape its prefix. Strict UID conformance (no
// leading zeros and so on) is the pipeline's validation's job, not the key's.
func Key(obj Object) (string, error) {
	if !KeySafeUID(obj.SOPInstanceUID) {
		// The UID itself stays out of the message: errors reach logs.
		return "", fmt.Errorf("%w: SOP Instance UID of %d characters", ErrUnsafeUID, len(obj.SOPInstanceUID))
	}
	study, series := obj.StudyInstanceUID, obj.SeriesInstanceUID
	if !KeySafeUID(study) {
		study = UnknownStudy
	}
	if !KeySafeUID(series) {
		series = UnknownSeries
	}
	t := obj.ReceivedAt.UTC()
	return fmt.Sprintf("%s%04d/%02d/%02d/%s/%s/%s.dcm", IncomingPrefix, t.Year(), int(t.Month()), t.Day(), study, series, obj.SOPInstanceUID), nil
}

// ConflictKey is where an object goes when key already holds different
// content: beside it, named after the new content (ChecksumConflictKey)
// or, where that is not known yet, another id of at least 16 hex digits
// (s3store names a multipart upload's after its C-STORE).
func ConflictKey(key, hexID string) string {
	short := hexID
	if len(short) > 16 {
		short = short[:16]
	}
	return strings.TrimSuffix(key, ".dcm") + ".conflict-" + short + ".dcm"
}

// ChecksumConflictKey is ConflictKey named after the new content's
// CRC-64/NVME.
func ChecksumConflictKey(key string, crc64nvme uint64) string {
	return ConflictKey(key, fmt.Sprintf("%016x", crc64nvme))
}

// ContentChecksum returns b's CRC-64/NVME, and its base64 form as
// Stored.CRC64NVME and S3 carry it.
func ContentChecksum(b []byte) (uint64, string) {
	crc := crcnvme.Checksum(b)
	return crc, crcnvme.Encode(crc)
}

// SuffixChecksum returns the CRC-64/NVME of what follows head in an object
// of size bytes whose whole CRC-64/NVME is whole (crcnvme.Suffix): the data
// set's of a Part 10 object whose File Meta Information head is, from the
// checksum S3 verified and the store reports, without reading the data set.
func SuffixChecksum(whole uint64, head []byte, size int64) uint64 {
	return crcnvme.Suffix(whole, crcnvme.Checksum(head), size-int64(len(head)))
}

// KeySafeUID reports whether uid can be used as a key component.
func KeySafeUID(uid string) bool {
	if len(uid) == 0 || len(uid) > 64 {
		return false
	}
	prevDot := true // a leading dot is an empty component
	for i := 0; i < len(uid); i++ {
		c := uid[i]
		switch {
		case c == '.':
			if prevDot {
				return false
			}
			prevDot = true
		case c >= '0' && c <= '9':
			prevDot = false
		default:
			return false
		}
	}
	return !prevDot
}
