package s3store_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in             string
		bucket, prefix string
		ok             bool
	}{
		{"s3://dicom-bucket", "dicom-bucket", "", true},
		{"s3://dicom-bucket/", "dicom-bucket", "", true},
		{"s3://dicom-bucket/site-a", "dicom-bucket", "site-a/", true},
		{"s3://dicom.bucket.1/a/b/", "dicom.bucket.1", "a/b/", true},
		{"s3://Dicom/x", "", "", false}, // uppercase
		{"s3://ab/x", "", "", false},    // too short
		{"s3://-abc/x", "", "", false},  // leading hyphen
		{"s3://a..b/x", "", "", false},  // consecutive dots
		{"s3://bucket/a//b", "", "", false},
		{"s3://bucket/a/../b", "", "", false},
		{"s3://bucket/x?versionId=1", "", "", false},
		{"s3://user@bucket/x", "", "", false},
		{"file:///tmp/x", "", "", false},
		{"bucket/x", "", "", false},
		{"s3:bucket", "", "", false},
		{"", "", "", false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			b, p, err := s3store.ParseURL(tc.in)
			if tc.ok != (err == nil) {
				t.Fatalf("ParseURL(%q) err = %v, want ok=%v", tc.in, err, tc.ok)
			}
			if err != nil {
				if !errors.Is(err, s3store.ErrBadURL) {
					t.Errorf("err %v does not wrap ErrBadURL", err)
				}
				return
			}
			if b != tc.bucket || p != tc.prefix {
				t.Errorf("ParseURL(%q) = %q, %q; want %q, %q", tc.in, b, p, tc.bucket, tc.prefix)
			}
		})
	}
}

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"s3://dicom-bucket/site-a", "s3://b.b.b/a/b/", "s3://x", "s3://bucket/%2e%2e/x", "s3://bucket/a\x00b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, p, err := s3store.ParseURL(s)
		if err != nil {
			return
		}
		if len(b) < 3 || len(b) > 63 || strings.ContainsAny(b, "/ _") {
			t.Errorf("bucket %q accepted", b)
		}
		if p != "" && (!strings.HasSuffix(p, "/") || strings.HasPrefix(p, "/")) {
			t.Errorf("prefix %q not normalised", p)
		}
		for _, seg := range strings.Split(strings.TrimSuffix(p, "/"), "/") {
			if p != "" && (seg == "" || seg == "." || seg == "..") {
				t.Errorf("prefix %q has segment %q", p, seg)
			}
		}
		// A parsed URL always makes a valid store.
		if _, err := s3store.New(context.Background(), s3store.Options{Bucket: b, Prefix: p, Client: nopClient{}}); err != nil {
			t.Errorf("New with parsed %q/%q: %v", b, p, err)
		}
	})
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts s3store.Options
	}{
		{"no bucket", s3store.Options{}},
		{"part too small", s3store.Options{Bucket: "bucket", PartSize: 1 << 20}},
		{"part too large", s3store.Options{Bucket: "bucket", PartSize: 6 << 30}},
		{"bad prefix", s3store.Options{Bucket: "bucket", Prefix: "a/../b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Client = nopClient{}
			if _, err := s3store.New(context.Background(), tc.opts); err == nil {
				t.Error("accepted")
			}
		})
	}
}

// nopClient satisfies s3store.Client for tests that never reach S3.
type nopClient struct{ s3store.Client }
