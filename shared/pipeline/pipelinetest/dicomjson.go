package pipelinetest

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
)

// ProcessedBulkDataURIs has f's pipeline process the object at key, the
// instance sop, and returns the bulk data URIs (BulkDataURIs) of the
// DICOM JSON it wrote, the one the index's row names.
func (f *Fakes) ProcessedBulkDataURIs(t testing.TB, key, sop string) map[string]string {
	t.Helper()
	ctx := context.Background()
	res, err := f.Pipeline().ProcessObject(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := f.Index.Instances(ctx, sop)
	if err != nil || len(rows) != 1 {
		t.Fatalf("indexed %+v, %v (processed: %+v); want one instance", rows, err, res)
	}
	doc, _, ok := f.Objects.Get(rows[0].MetadataKey)
	if !ok {
		t.Fatal("no DICOM JSON at the key the index names")
	}
	uris, err := BulkDataURIs(doc)
	if err != nil {
		t.Fatal(err)
	}
	return uris
}

// BulkDataURIs reads a DICOM JSON document (PS3.18 F.2) and returns the
// BulkDataURI of every attribute that has one, in sequences' items too,
// by its path: the tags from the top, and each item's index, joined by
// "/" (7FE00010; 00880200/0/7FE00010 for an icon's Pixel Data).
func BulkDataURIs(doc []byte) (map[string]string, error) {
	out := map[string]string{}
	var walk func(prefix string, ds map[string]json.RawMessage) error
	walk = func(prefix string, ds map[string]json.RawMessage) error {
		for tag, raw := range ds {
			var a struct {
				VR          string
				BulkDataURI string
				Value       json.RawMessage
			}
			if err := json.Unmarshal(raw, &a); err != nil {
				return fmt.Errorf("%s%s: %w", prefix, tag, err)
			}
			if a.BulkDataURI != "" {
				out[prefix+tag] = a.BulkDataURI
			}
			if a.VR != "SQ" || a.Value == nil {
				continue
			}
			var items []map[string]json.RawMessage
			if err := json.Unmarshal(a.Value, &items); err != nil {
				return fmt.Errorf("%s%s: items: %w", prefix, tag, err)
			}
			for i, it := range items {
				if err := walk(prefix+tag+"/"+strconv.Itoa(i)+"/", it); err != nil {
					return err
				}
			}
		}
		return nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(doc, &top); err != nil {
		return nil, err
	}
	return out, walk("", top)
}
