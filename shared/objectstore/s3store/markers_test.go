package s3store_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
)

// TestMarkers: run markers are listed, read with their ETag, replaced
// only over the version read when asked (a compare and swap between SCP
// tasks), and deleted; they live under the prefix's audit-runs/, apart from
// the records the pipeline reads.
func TestMarkers(t *testing.T) {
	ctx := context.Background()
	srv := s3test.NewServer(t, "bucket")
	s, err := s3store.New(ctx, s3store.Options{Bucket: "bucket", Prefix: "site", Client: s3test.Client(srv.URL)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutMarker(ctx, "a.json", []byte(`{"v":1}`), ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := srv.Object("site/" + objectstore.RunMarkersPrefix + "a.json"); err != nil {
		t.Fatalf("marker not under the prefix's %s: %v", objectstore.RunMarkersPrefix, err)
	}
	m, err := s.GetMarker(ctx, "a.json")
	if err != nil || string(m.Body) != `{"v":1}` || m.ETag == "" {
		t.Fatalf("GetMarker = %q, %q, %v", m.Body, m.ETag, err)
	}
	etag := m.ETag
	if err := s.PutMarker(ctx, "a.json", []byte(`{"v":2}`), ""); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, ifMatch string
		want          error
	}{
		{"over a version since replaced", etag, objectstore.ErrMarkerChanged},
		{"over the version read", "", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ifMatch := tt.ifMatch
			if ifMatch == "" {
				m, err := s.GetMarker(ctx, "a.json")
				if err != nil {
					t.Fatal(err)
				}
				ifMatch = m.ETag
			}
			if err := s.PutMarker(ctx, "a.json", []byte(`{"v":3}`), ifMatch); !errors.Is(err, tt.want) {
				t.Errorf("PutMarker = %v, want %v", err, tt.want)
			}
		})
	}
	if names, err := s.ListMarkers(ctx); err != nil || !slices.Equal(names, []string{"a.json"}) {
		t.Errorf("ListMarkers = %v, %v", names, err)
	}
	if err := s.DeleteMarker(ctx, "a.json"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetMarker(ctx, "a.json"); !errors.Is(err, objectstore.ErrMarkerChanged) {
		t.Errorf("GetMarker of a deleted marker = %v", err)
	}
	if err := s.DeleteMarker(ctx, "a.json"); err != nil {
		t.Errorf("deleting a marker twice: %v", err)
	}
	if err := s.PutMarker(ctx, "../audit/x.json", nil, ""); err == nil {
		t.Error("a marker name that is a path was written")
	}
}

// TestMarkerAgeOnS3sClock: a marker read says when it was written and when
// it was read by S3's clock (Last-Modified, Date), not this process's: with
// S3's clock an hour on, it reads an hour old.
func TestMarkerAgeOnS3sClock(t *testing.T) {
	ctx := context.Background()
	srv := s3test.NewServer(t, "bucket")
	s, err := s3store.New(ctx, s3store.Options{Bucket: "bucket", Client: s3test.Client(srv.URL)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutMarker(ctx, "a.json", []byte(`{}`), ""); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		advance time.Duration
	}{
		{"as written", 0},
		{"an hour on by S3's clock", time.Hour},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv.Clock.Advance(tt.advance)
			m, err := s.GetMarker(ctx, "a.json")
			if err != nil {
				t.Fatal(err)
			}
			// S3's times are whole seconds.
			if age := m.Read.Sub(m.Written); age < srv.Clock.Since(m.Written)-time.Second || age > srv.Clock.Since(m.Written)+time.Second {
				t.Errorf("age %s (written %s, read %s), S3's clock says %s", age, m.Written, m.Read, srv.Clock.Since(m.Written))
			}
			if d := m.Read.Sub(srv.Clock.Now()); d < -2*time.Second || d > time.Second {
				t.Errorf("read at %s, not S3's time %s", m.Read, srv.Clock.Now())
			}
		})
	}
}
