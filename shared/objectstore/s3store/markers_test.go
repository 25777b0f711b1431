package s3store_test

import (
	"context"
	"errors"
	"slices"
	"testing"

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
	body, etag, err := s.GetMarker(ctx, "a.json")
	if err != nil || string(body) != `{"v":1}` || etag == "" {
		t.Fatalf("GetMarker = %q, %q, %v", body, etag, err)
	}
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
				if _, ifMatch, err = s.GetMarker(ctx, "a.json"); err != nil {
					t.Fatal(err)
				}
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
	if _, _, err := s.GetMarker(ctx, "a.json"); !errors.Is(err, objectstore.ErrMarkerChanged) {
		t.Errorf("GetMarker of a deleted marker = %v", err)
	}
	if err := s.DeleteMarker(ctx, "a.json"); err != nil {
		t.Errorf("deleting a marker twice: %v", err)
	}
	if err := s.PutMarker(ctx, "../audit/x.json", nil, ""); err == nil {
		t.Error("a marker name that is a path was written")
	}
}
