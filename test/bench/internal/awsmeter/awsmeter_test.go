package awsmeter

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHandlerCounts(t *testing.T) {
	m := New()
	h := m.Handler("S3", http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	for _, target := range []string{"/b/k1", "/b/k2", "/b"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("HEAD", target, nil))
	}
	m.Add("SQS SendMessage", 3)
	if l := m.Latencies(); l["S3 HeadObject"].N != 2 || l["S3 HeadBucket"].N != 1 || len(l) != 2 {
		t.Errorf("latencies %v", l)
	}
	got := m.Reset()
	if got["S3 HeadObject"] != 2 || got["S3 HeadBucket"] != 1 || got["SQS SendMessage"] != 3 || len(got) != 3 {
		t.Errorf("counts %v", got)
	}
	if len(m.Counts()) != 0 {
		t.Errorf("counts after Reset: %v", m.Counts())
	}
}
