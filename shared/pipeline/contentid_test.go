package pipeline

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc64"
	"io"
	"strings"
	"testing"
)

// nvme is CRC-64/NVME by hash/crc64 (its polynomial, bit-reversed): an
// implementation of its own to hold the derived data set checksum to.
var nvme = crc64.MakeTable(0x9a6c9329ac4bc9b5)

func crcB64(b []byte) string {
	return base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint64(nil, crc64.Checksum(b, nvme)))
}

func TestContentIdentity(t *testing.T) {
	head := append(make([]byte, 128), "DICM\x02\x00\x00\x00UL\x04\x00\x00\x00\x00\x00"...)
	set := []byte("the data set's bytes, whatever they are")
	object := append(append([]byte(nil), head...), set...)
	whole := fmt.Sprintf("crc64nvme-%016x", crc64.Checksum(object, nvme))
	parsed := &header{MetaEnd: int64(len(head)), MetaHead: head}
	tests := []struct {
		name  string
		info  ObjectInfo
		h     *header
		want  string
		whole string
	}{
		{"the data set's CRC-64/NVME, derived from the whole's",
			ObjectInfo{Size: int64(len(object)), ChecksumCRC64NVME: crcB64(object), ETag: `"e"`}, parsed,
			fmt.Sprintf("dataset-crc64nvme-%016x", crc64.Checksum(set, nvme)), whole},
		{"an empty data set",
			ObjectInfo{Size: int64(len(head)), ChecksumCRC64NVME: crcB64(head)}, parsed,
			"dataset-crc64nvme-0000000000000000", fmt.Sprintf("crc64nvme-%016x", crc64.Checksum(head, nvme))},
		{"an earlier version's SHA-256 stays the identity",
			ObjectInfo{Metadata: map[string]string{"sha256": strings.Repeat("ABCDEF01", 8)}, Size: int64(len(object)), ChecksumCRC64NVME: crcB64(object)}, parsed,
			strings.Repeat("abcdef01", 8), strings.Repeat("abcdef01", 8)},
		{"a sha256 value no earlier version wrote (not 64 hex digits) is none",
			ObjectInfo{Metadata: map[string]string{"sha256": "ABCDEF"}, Size: int64(len(object)), ChecksumCRC64NVME: crcB64(object)}, parsed,
			fmt.Sprintf("dataset-crc64nvme-%016x", crc64.Checksum(set, nvme)), whole},
		{"no File Meta Information read (not Part 10): the whole file's",
			ObjectInfo{Size: int64(len(object)), ChecksumCRC64NVME: crcB64(object)}, nil,
			whole, whole},
		{"a meta end past the object's end: the whole file's",
			ObjectInfo{Size: 10, ChecksumCRC64NVME: crcB64(object)}, parsed,
			whole, whole},
		{"no checksum at all: the ETag",
			ObjectInfo{ETag: `"d41d8cd9-2"`}, parsed,
			"etag-d41d8cd9-2", "etag-d41d8cd9-2"},
		{"a checksum that is not 8 bytes is not used",
			ObjectInfo{ChecksumCRC64NVME: "AAAA", ETag: `"x"`}, parsed,
			"etag-x", "etag-x"},
		{"nor one that is not base64",
			ObjectInfo{ChecksumCRC64NVME: "not base64!", ETag: `"x"`}, parsed,
			"etag-x", "etag-x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := (&Pipeline{}).contentIdentity(context.Background(), tt.info, tt.h)
			if err != nil || got.ID != tt.want || got.Whole != tt.whole {
				t.Errorf("content identity %q (whole %q), %v; want %q (whole %q)", got.ID, got.Whole, err, tt.want, tt.whole)
			}
			if tx := transactionOf(tt.info, got); tx.ContentIdentity != got.ID {
				t.Errorf("transaction's identity %q, want %q", tx.ContentIdentity, got.ID)
			}
		})
	}
}

// throttled is a store whose reads fail, naming the key as S3's errors
// do: its HEADs too when head is set, else they describe the indexed
// object (rec in TestSameContentRedactsTheIndexedKey).
type throttled struct{ head bool }

func (t throttled) Head(_ context.Context, key string) (ObjectInfo, error) {
	if t.head {
		return ObjectInfo{}, fmt.Errorf("s3: head %s: SlowDown", key)
	}
	return ObjectInfo{Key: key, Size: 1000, ETag: `"e"`, ChecksumCRC64NVME: base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint64(nil, 0xab))}, nil
}

func (throttled) OpenRange(_ context.Context, key string, _, _ int64) (io.ReadCloser, error) {
	return nil, fmt.Errorf("s3: get %s: SlowDown", key)
}

// TestSameContentRedactsTheIndexedKey: comparing with an identity indexed
// in the whole-file form heads and reads the indexed object; a failed head
// or read is retried (an error) and names that object by its keyed digest,
// not by its key's UIDs, which are not the delivered object's the caller
// redacts.
func TestSameContentRedactsTheIndexedKey(t *testing.T) {
	const series = "1.2.826.0.1.3680043.10.9.77"
	rec := InstanceRecord{ObjectKey: "incoming/2026/01/15/1.2.3/" + series + "/1.2.3.4.dcm", Size: 1000, ContentIdentity: "crc64nvme-00000000000000ab"}
	for _, tt := range []struct {
		name  string
		store throttled
	}{{"head fails", throttled{head: true}}, {"read fails", throttled{}}} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := (&Pipeline{Objects: tt.store}).sameContent(context.Background(), rec, identity{ID: "dataset-crc64nvme-00000000000000cd", hasSet: true})
			if err == nil || strings.Contains(err.Error(), series) {
				t.Errorf("error %v; want one that names no UID of the indexed key", err)
			}
		})
	}
}
