package pipeline

import "testing"

func TestTransactionContentIdentity(t *testing.T) {
	tests := []struct {
		name string
		info ObjectInfo
		want string
	}{
		{"the SCP's SHA-256 wins",
			ObjectInfo{Metadata: map[string]string{"sha256": "ABCDEF"}, ChecksumCRC64NVME: "rosUhgp5mIg=", ETag: `"e"`},
			"abcdef"},
		{"multipart: S3's full-object CRC64NVME",
			ObjectInfo{Metadata: map[string]string{}, ChecksumCRC64NVME: "rosUhgp5mIg=", ETag: `"d41d8cd9-2"`},
			"crc64nvme-ae8b14860a799888"},
		{"no checksum at all: the ETag",
			ObjectInfo{ETag: `"d41d8cd9-2"`},
			"etag-d41d8cd9-2"},
		{"a checksum that is not 8 bytes is not used",
			ObjectInfo{ChecksumCRC64NVME: "AAAA", ETag: `"x"`},
			"etag-x"},
		{"nor one that is not base64",
			ObjectInfo{ChecksumCRC64NVME: "not base64!", ETag: `"x"`},
			"etag-x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := transactionOf(tt.info).SHA256; got != tt.want {
				t.Errorf("content identity %q, want %q", got, tt.want)
			}
		})
	}
}
