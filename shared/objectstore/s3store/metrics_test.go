package s3store

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
)

// TestRetriesKnownFromTheStart: every operation's retry series is on
// /metrics at 0 once the store registers its metrics, so the agent's
// baseline is 0 and a first retry is published; and every operation the
// store retries (the op of each do and putBytes call in its source) is one
// of metricnames.S3Operations, so none is missing from that list.
func TestRetriesKnownFromTheStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(m.retries); n != len(metricnames.S3Operations) {
		t.Errorf("%d retry series after registration, want one per operation (%d)", n, len(metricnames.S3Operations))
	}
	for _, op := range metricnames.S3Operations {
		if v := testutil.ToFloat64(m.retries.WithLabelValues(op)); v != 0 {
			t.Errorf("retries of %s = %v at start", op, v)
		}
	}

	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	seen := 0
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) < 2 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "do" && sel.Sel.Name != "putBytes") {
				return true
			}
			switch arg := call.Args[1].(type) {
			case *ast.BasicLit:
				op, err := strconv.Unquote(arg.Value)
				if err != nil || !slices.Contains(metricnames.S3Operations, op) {
					t.Errorf("%s: %s retries operation %s, not one of metricnames.S3Operations", fset.Position(arg.Pos()), sel.Sel.Name, arg.Value)
				}
				seen++
			case *ast.Ident:
				if arg.Name != "op" { // putBytes passes its own op on
					t.Errorf("%s: %s's operation %s is not a literal", fset.Position(arg.Pos()), sel.Sel.Name, arg.Name)
				}
			default:
				t.Errorf("%s: %s's operation is not a literal", fset.Position(call.Pos()), sel.Sel.Name)
			}
			return true
		})
	}
	if seen < len(metricnames.S3Operations) {
		t.Errorf("found %d retried calls in the source, fewer than the %d operations listed", seen, len(metricnames.S3Operations))
	}
}
