package s3store_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
)

// TestMarkers: run markers are listed, read with their ETag, replaced
// only over the version read when asked (a compare and swap between SCP
// tasks), and deleted; a write gives the ETag of what it wrote. They live
// under the prefix's audit-runs/, apart from the records the pipeline
// reads.
func TestMarkers(t *testing.T) {
	ctx := context.Background()
	srv, s := markerStore(t, "site")
	written, err := s.PutMarker(ctx, "a.json", []byte(`{"v":1}`), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := srv.Object("site/" + objectstore.RunMarkersPrefix + "a.json"); err != nil {
		t.Fatalf("marker not under the prefix's %s: %v", objectstore.RunMarkersPrefix, err)
	}
	m, err := s.GetMarker(ctx, "a.json")
	if err != nil || string(m.Body) != `{"v":1}` || m.ETag == "" || m.ETag != written {
		t.Fatalf("GetMarker = %q, %q, %v; PutMarker's ETag %q", m.Body, m.ETag, err, written)
	}
	etag := m.ETag
	if _, err := s.PutMarker(ctx, "a.json", []byte(`{"v":2}`), ""); err != nil {
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
			if _, err := s.PutMarker(ctx, "a.json", []byte(`{"v":3}`), ifMatch); !errors.Is(err, tt.want) {
				t.Errorf("PutMarker = %v, want %v", err, tt.want)
			}
		})
	}
	if names, err := s.ListMarkers(ctx); err != nil || !slices.Equal(names, []string{"a.json"}) {
		t.Errorf("ListMarkers = %v, %v", names, err)
	}
	if err := s.DeleteMarker(ctx, "a.json", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetMarker(ctx, "a.json"); !errors.Is(err, objectstore.ErrMarkerChanged) {
		t.Errorf("GetMarker of a deleted marker = %v", err)
	}
	if err := s.DeleteMarker(ctx, "a.json", ""); err != nil {
		t.Errorf("deleting a marker twice: %v", err)
	}
	if _, err := s.PutMarker(ctx, "../audit/x.json", nil, ""); err == nil {
		t.Error("a marker name that is a path was written")
	}
}

// TestConditionalDeleteMarker: a marker deleted over a version (If-Match
// on the ETag its claim's write gave) goes only while that version is the
// marker: rewritten since (its run alive after all, or claimed again by
// another task), it stays and the delete says objectstore.ErrMarkerChanged;
// gone since, the delete has nothing to do.
func TestConditionalDeleteMarker(t *testing.T) {
	ctx := context.Background()
	_, s := markerStore(t, "")
	claimed, err := s.PutMarker(ctx, "a.json", []byte(`{"takenBy":"me"}`), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutMarker(ctx, "a.json", []byte(`{"instance":"a"}`), ""); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMarker(ctx, "a.json", claimed); !errors.Is(err, objectstore.ErrMarkerChanged) {
		t.Errorf("DeleteMarker over a version since replaced = %v, want %v", err, objectstore.ErrMarkerChanged)
	}
	m, err := s.GetMarker(ctx, "a.json")
	if err != nil || string(m.Body) != `{"instance":"a"}` {
		t.Fatalf("the marker rewritten after the claim: %q, %v", m.Body, err)
	}
	if err := s.DeleteMarker(ctx, "a.json", m.ETag); err != nil {
		t.Errorf("DeleteMarker over the version read = %v", err)
	}
	if names, err := s.ListMarkers(ctx); err != nil || len(names) != 0 {
		t.Errorf("markers after the delete: %v, %v", names, err)
	}
	if err := s.DeleteMarker(ctx, "a.json", m.ETag); err != nil {
		t.Errorf("DeleteMarker over a version gone = %v, want nil", err)
	}
}

// TestMarkerAgeOnS3sClock: a marker read says when it was written and when
// it was read by S3's clock (Last-Modified, Date), not this process's: with
// S3's clock an hour on, it reads an hour old.
func TestMarkerAgeOnS3sClock(t *testing.T) {
	ctx := context.Background()
	srv, s := markerStore(t, "")
	if _, err := s.PutMarker(ctx, "a.json", []byte(`{}`), ""); err != nil {
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

// markerStore is a store on a fresh S3 emulator's bucket, under prefix.
func markerStore(t *testing.T, prefix string) (*s3test.Server, *s3store.Store) {
	t.Helper()
	srv := s3test.NewServer(t, "bucket")
	s, err := s3store.New(context.Background(), s3store.Options{Bucket: "bucket", Prefix: prefix, Client: s3test.Client(srv.URL)})
	if err != nil {
		t.Fatal(err)
	}
	return srv, s
}

// TestMarkerWithoutETag: an S3 that answers a run marker's read or write
// without its ETag (a proxy dropping it, a store that is not S3) is an
// error, not a marker whose claim and delete would go unconditionally.
func TestMarkerWithoutETag(t *testing.T) {
	ctx := context.Background()
	srv := s3test.NewServer(t, "bucket")
	target, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(r *http.Response) error {
		r.Header.Del("ETag")
		return nil
	}
	front := httptest.NewServer(proxy)
	t.Cleanup(front.Close)
	direct, err := s3store.New(ctx, s3store.Options{Bucket: "bucket", Client: s3test.Client(srv.URL)})
	if err != nil {
		t.Fatal(err)
	}
	stripped, err := s3store.New(ctx, s3store.Options{Bucket: "bucket", Client: s3test.Client(front.URL)})
	if err != nil {
		t.Fatal(err)
	}
	etag, err := direct.PutMarker(ctx, "a.json", []byte(`{"v":1}`), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stripped.GetMarker(ctx, "a.json"); err == nil || !strings.Contains(err.Error(), "ETag") {
		t.Errorf("GetMarker without an ETag = %v, want an error naming the ETag", err)
	}
	for _, conditional := range []bool{true, false} {
		ifMatch := ""
		if conditional {
			ifMatch = etag
		}
		if _, err := stripped.PutMarker(ctx, "a.json", []byte(`{"v":2}`), ifMatch); err == nil || !strings.Contains(err.Error(), "ETag") {
			t.Errorf("PutMarker (If-Match %q) answered without an ETag = %v, want an error naming the ETag", ifMatch, err)
		}
	}
}
