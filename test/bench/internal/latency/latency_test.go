package latency

import (
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Dist
		wantErr bool
	}{
		{"", Dist{}, false},
		{"0", Dist{}, false},
		{"5ms", Dist{5 * time.Millisecond, 5 * time.Millisecond}, false},
		{"20ms/100ms", Dist{20 * time.Millisecond, 100 * time.Millisecond}, false},
		{" 1s/3s ", Dist{time.Second, 3 * time.Second}, false},
		{"100ms/20ms", Dist{}, true},
		{"fast", Dist{}, true},
		{"20ms/slow", Dist{}, true},
		{"-1ms", Dist{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("Parse(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// The log-normal's quantiles are the ones it was given (within sampling
// error on a fixed seed, so the test cannot flake).
func TestSampleQuantiles(t *testing.T) {
	for _, d := range []Dist{{20 * time.Millisecond, 100 * time.Millisecond}, {250 * time.Millisecond, 2 * time.Second}} {
		r := rand.New(rand.NewPCG(1, 2))
		xs := make([]time.Duration, 200_000)
		for i := range xs {
			xs[i] = d.Sample(r)
		}
		slices.Sort(xs)
		p50, p99 := xs[len(xs)/2], xs[len(xs)*99/100]
		if !near(p50, d.P50, 0.03) || !near(p99, d.P99, 0.05) {
			t.Errorf("%v: sampled p50 %v, p99 %v", d, p50, p99)
		}
		if xs[len(xs)-1] > 10*d.P99 {
			t.Errorf("%v: a sample of %v past the cap", d, xs[len(xs)-1])
		}
	}
	if got := (Dist{5 * time.Millisecond, 5 * time.Millisecond}).Sample(nil); got != 5*time.Millisecond {
		t.Errorf("constant delay sampled %v", got)
	}
}

func near(got, want time.Duration, tol float64) bool {
	return float64(got) >= float64(want)*(1-tol) && float64(got) <= float64(want)*(1+tol)
}

// A write is answered only after its body was read and the delay passed;
// a read without delay is not held.
func TestHandler(t *testing.T) {
	const hold = 30 * time.Millisecond
	var readAt time.Time
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
		}
		readAt = time.Now()
		w.Write(b)
	})
	srv := httptest.NewServer(Handler(echo, ByMethod(nil, NewSampler(Dist{hold, hold}, 1))))
	defer srv.Close()

	resp, err := http.Post(srv.URL, "text/plain", strings.NewReader("body"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(b) != "body" {
		t.Fatalf("answer %q, %v", b, err)
	}
	if since := time.Since(readAt); since < hold {
		t.Errorf("answered %v after the body was read, want at least %v", since, hold)
	}
	resp, err = http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}
