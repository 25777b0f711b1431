package pipeline_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
)

// documentsOf reads the DICOM JSON and the summary at jsonKey and
// summaryKey: the patient's name each holds and the content identity the
// summary names.
func documentsOf(t *testing.T, f *pt.Fakes, jsonKey, summaryKey string) (jsonName, summaryName, summaryID string) {
	t.Helper()
	body, _, ok := f.Objects.Get(jsonKey)
	if !ok {
		t.Fatalf("no DICOM JSON at the key named")
	}
	var dj map[string]json.RawMessage
	if err := json.Unmarshal(body, &dj); err != nil {
		t.Fatal(err)
	}
	var pn struct{ Value []struct{ Alphabetic string } }
	if err := json.Unmarshal(dj["00100010"], &pn); err != nil {
		t.Fatal(err)
	}
	if len(pn.Value) == 1 {
		jsonName = pn.Value[0].Alphabetic
	}
	if summaryKey == "" {
		return jsonName, "", ""
	}
	if body, _, ok = f.Objects.Get(summaryKey); !ok {
		t.Fatalf("no summary at the key named")
	}
	var sum pipeline.NormalizedSummary
	if err := json.Unmarshal(body, &sum); err != nil {
		t.Fatal(err)
	}
	if n := sum.PatientName; n != nil && n.Alphabetic != nil {
		summaryName = n.Alphabetic.Family + "^" + n.Alphabetic.Given
	}
	return jsonName, summaryName, sum.SHA256
}

// TestOverwrittenKeyKeepsEachContentsDocuments: an object key overwritten
// with other content after the first was indexed (docs/pipeline.md,
// "Duplicates": any caller that may s3:PutObject can, the SCP never does)
// leaves each content's metadata documents its own. The first content's
// index row, its Instance Stored's metadataKey and summaryKey, and the
// second's, each name documents describing that content: named after the
// object key alone, the second's processing wrote its documents over the
// first's, and the first's row and event then named the second's patient.
func TestOverwrittenKeyKeepsEachContentsDocuments(t *testing.T) {
	a, b := ct(sop1), ct(sop1)
	a.PatientName, b.PatientName = "Doe^Jane", "Roe^Robert"
	names := map[bool]string{false: a.PatientName, true: b.PatientName} // by the row's conflict flag
	ctx := context.Background()
	f := pt.New()
	p := f.Pipeline()
	storedAs(f, key(sop1), a.Build(), "MODALITY1", "assoc1", "2026-01-15T10:20:30Z")
	if res, err := p.ProcessObject(ctx, key(sop1)); err != nil || res.Outcome != pipeline.InstanceNew {
		t.Fatalf("the first content: %v, %v; want it new", res.Outcome, err)
	}
	storedAs(f, key(sop1), b.Build(), "SOMEONE_ELSE", "assoc2", "2026-01-15T11:00:00Z")
	if res, err := p.ProcessObject(ctx, key(sop1)); err != nil || res.Outcome != pipeline.InstanceConflict {
		t.Fatalf("the overwriting content: %v, %v; want a conflict", res.Outcome, err)
	}

	rows, err := f.Index.Instances(ctx, sop1)
	if err != nil || len(rows) != 2 {
		t.Fatalf("rows %+v, %v; want both contents", rows, err)
	}
	for _, r := range rows {
		want := names[r.Conflict]
		if got, _, _ := documentsOf(t, f, r.MetadataKey, ""); got != want {
			t.Errorf("the row of %s (conflict %v) names a DICOM JSON of %q, want %q", r.ContentIdentity, r.Conflict, got, want)
		}
	}
	events := f.Events.All()
	if len(events) != 2 {
		t.Fatalf("%d events, want each content's Instance Stored", len(events))
	}
	for _, ev := range events {
		var d pipeline.InstanceStoredDetail
		if err := json.Unmarshal(ev.Detail, &d); err != nil {
			t.Fatal(err)
		}
		want := names[d.Conflict]
		jsonName, summaryName, summaryID := documentsOf(t, f, d.MetadataKey, d.SummaryKey)
		if jsonName != want || summaryName != want || summaryID != d.SHA256 {
			t.Errorf("the Instance Stored of %s (conflict %v) names documents of %q and %q (summary of %s), want %q",
				d.SHA256, d.Conflict, jsonName, summaryName, summaryID, want)
		}
	}
}

// TestDocumentKeys: an object's documents (its DICOM JSON and summary,
// when valid) and its quarantine copy and findings (when not) are named
// after its key and its bytes' identity by one rule, in every form that
// identity takes, under the object's store root, each name one key-safe
// path component that logname.UIDs reads the SOP Instance UID from.
func TestDocumentKeys(t *testing.T) {
	const crc = "ASNFZ4mrze8=" // base64 of 0x0123456789abcdef, as S3 reports it
	sha := strings.Repeat("7b", 32)
	dir := "2026/01/15/" + study + "/" + series + "/"
	tests := []struct {
		name string
		info pipeline.ObjectInfo
		root string
		base string // the names below the section, before their suffixes
	}{
		{"stored now", pipeline.ObjectInfo{Key: key(sop1), ChecksumCRC64NVME: crc, ETag: `"e"`},
			"", dir + sop1 + ".crc64nvme-0123456789abcdef"},
		{"under a store root, a conflict key", pipeline.ObjectInfo{Key: "site-a/" + strings.TrimSuffix(key(sop1), ".dcm") + ".conflict-00ff.dcm", ChecksumCRC64NVME: crc},
			"site-a/", dir + sop1 + ".conflict-00ff.crc64nvme-0123456789abcdef"},
		{"stored by an earlier version", pipeline.ObjectInfo{Key: key(sop1), ChecksumCRC64NVME: crc, Metadata: map[string]string{objectstore.MetaLegacySHA256: strings.ToUpper(sha)}},
			"", dir + sop1 + ".sha256-" + sha},
		{"stored by something else", pipeline.ObjectInfo{Key: key(sop1), ETag: `"ab/cd+ef-2"`},
			"", dir + sop1 + ".etag-ab_cd_ef-2"},
		// A sha256 value no earlier version wrote (an outside writer's:
		// user metadata holds up to 2 KB, a key at most 1,024 bytes) is
		// not a name: the store's identity of the bytes names them.
		{"a sha256 value too long", pipeline.ObjectInfo{Key: key(sop1), ChecksumCRC64NVME: crc, Metadata: map[string]string{objectstore.MetaLegacySHA256: strings.Repeat("ab", 900)}},
			"", dir + sop1 + ".crc64nvme-0123456789abcdef"},
		{"a sha256 value one digit short", pipeline.ObjectInfo{Key: key(sop1), ChecksumCRC64NVME: crc, Metadata: map[string]string{objectstore.MetaLegacySHA256: sha[1:]}},
			"", dir + sop1 + ".crc64nvme-0123456789abcdef"},
		{"a sha256 value of 64 digits not all hex", pipeline.ObjectInfo{Key: key(sop1), ChecksumCRC64NVME: crc, Metadata: map[string]string{objectstore.MetaLegacySHA256: "g" + sha[1:]}},
			"", dir + sop1 + ".crc64nvme-0123456789abcdef"},
		{"a sha256 value in another identity's form", pipeline.ObjectInfo{Key: key(sop1), ChecksumCRC64NVME: crc, Metadata: map[string]string{objectstore.MetaLegacySHA256: "etag-" + strings.Repeat("x", 1500)}},
			"", dir + sop1 + ".crc64nvme-0123456789abcdef"},
		{"a sha256 value malformed, no checksum", pipeline.ObjectInfo{Key: key(sop1), ETag: `"e1"`, Metadata: map[string]string{objectstore.MetaLegacySHA256: "x"}},
			"", dir + sop1 + ".etag-e1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dj, sum := pipeline.MetadataKeys(tt.info)
			q, findings := pipeline.QuarantineKeys(tt.info)
			want := []string{
				tt.root + "metadata/" + tt.base + ".json", tt.root + "metadata/" + tt.base + ".summary.json",
				tt.root + "quarantine/" + tt.base + ".dcm", tt.root + "quarantine/" + tt.base + ".findings.json",
			}
			if d := cmp.Diff(want, []string{dj, sum, q, findings}); d != "" {
				t.Errorf("MetadataKeys, QuarantineKeys (-want +got):\n%s", d)
			}
			if got := pipeline.QuarantineFindingsKey(q); got != findings {
				t.Errorf("QuarantineFindingsKey(%q) = %q, want %q", q, got, findings)
			}
			for _, k := range []string{dj, sum, q, findings} {
				if len(k) > 1024 {
					t.Errorf("a name of %d bytes: S3 refuses a key longer than 1,024", len(k))
				}
			}
			for _, k := range []string{dj, q} {
				if want := []string{study, series, sop1}; !cmp.Equal(logname.UIDs(k), want) {
					t.Errorf("UIDs of %q = %v, want %v", k, logname.UIDs(k), want)
				}
			}
		})
	}
}

// TestOverwrittenKeyKeepsEachRejectsCopy: a key holding an invalid object
// overwritten with another invalid one (docs/pipeline.md, "Duplicates":
// any caller that may s3:PutObject can) leaves each content's quarantine
// copy and findings its own. Each content's Instance Rejected and audit
// record name a copy of that content's bytes and findings of that
// content: named after the key alone, the second's copy and findings were
// written over the first's, which its event and record still named.
func TestOverwrittenKeyKeepsEachRejectsCopy(t *testing.T) {
	a, b := ct(sop1), ct(sop1)
	a.StudyUID, b.StudyUID = "1.2.03", "1.2.04" // both invalid (uid-syntax), each its own content
	ctx := context.Background()
	f := pt.New()
	p := f.Pipeline()
	contents := map[string][]byte{} // by content identity
	for i, in := range []pt.Instance{a, b} {
		data := in.Build()
		storedAs(f, key(sop1), data, "MODALITY1", fmt.Sprintf("assoc%d", i), "2026-01-15T10:20:30Z")
		contents[wholeCRC(data)] = data
		res, err := p.ProcessObject(ctx, key(sop1))
		if err != nil || res.Valid {
			t.Fatalf("content %d: %+v, %v; want it quarantined", i, res, err)
		}
	}
	// A redelivery of the second changes nothing.
	if _, err := p.ProcessObject(ctx, key(sop1)); err != nil {
		t.Fatal(err)
	}

	check := func(what, id, qKey, fKey string) {
		t.Helper()
		want, ok := contents[id]
		if !ok {
			t.Fatalf("%s names content %s, neither stored", what, id)
		}
		if got, _, ok := f.Objects.Get(qKey); !ok || !bytes.Equal(got, want) {
			t.Errorf("%s of %s: its quarantine copy (%v) holds other bytes", what, id, ok)
		}
		body, _, ok := f.Objects.Get(fKey)
		var doc map[string]any
		if !ok || json.Unmarshal(body, &doc) != nil || doc[pipeline.ContentIdentityField] != id || doc["quarantineKey"] != qKey {
			t.Errorf("%s of %s: its findings (%v) describe %v at %v", what, id, ok, doc[pipeline.ContentIdentityField], doc["quarantineKey"])
		}
	}
	events := f.Events.All()
	if len(events) != 2 {
		t.Fatalf("%d events, want each content's Instance Rejected", len(events))
	}
	keys := map[string]bool{}
	for _, ev := range events {
		var d pipeline.InstanceRejectedDetail
		if err := json.Unmarshal(ev.Detail, &d); err != nil {
			t.Fatal(err)
		}
		check("the Instance Rejected", d.SHA256, d.QuarantineKey, d.FindingsKey)
		keys[d.QuarantineKey] = true
	}
	if len(keys) != 2 {
		t.Errorf("the two events name %d quarantine copies, want one each", len(keys))
	}
	recs := f.Audit.All()
	if len(recs) != 2 {
		t.Fatalf("%d audit records, want each content's", len(recs))
	}
	for _, r := range recs {
		check("the audit record", r.ContentIdentity, r.QuarantineKey, pipeline.QuarantineFindingsKey(r.QuarantineKey))
	}
}

// bulkDataBytes returns the bytes its pixel data's bulk data URI names
// (pipeline.BulkDataBytesParam) in the DICOM JSON at jsonKey, and whether
// the URI gives the range.
func bulkDataBytes(t *testing.T, f *pt.Fakes, jsonKey string) (string, bool) {
	t.Helper()
	q := pixelDataURI(t, f, jsonKey).Query()
	return q.Get(pipeline.BulkDataBytesParam), q.Get("offset") != "" && q.Get("length") != ""
}

// pixelDataURI is its pixel data's bulk data URI in the DICOM JSON at
// jsonKey.
func pixelDataURI(t *testing.T, f *pt.Fakes, jsonKey string) *url.URL {
	t.Helper()
	body, _, ok := f.Objects.Get(jsonKey)
	if !ok {
		t.Fatalf("no DICOM JSON at the key named")
	}
	var dj map[string]struct{ BulkDataURI string }
	if err := json.Unmarshal(body, &dj); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(dj["7FE00010"].BulkDataURI)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestBulkDataURIsNameTheBytes: a DICOM JSON document's bulk data URIs
// name the object's key, which a caller that may s3:PutObject can
// overwrite with other content (docs/pipeline.md, "Duplicates"): each
// also names the bytes the document describes (pipeline.BytesName, the
// <id> of the document's own name), so a reader checks the key still holds
// them before it reads the range. Without it, the first content's
// document sent its reader to the second content's pixel data.
func TestBulkDataURIsNameTheBytes(t *testing.T) {
	a, b := ct(sop1), ct(sop1)
	a.PatientName, b.PatientName = "Doe^Jane", "Roe^Robert"
	for _, tt := range []struct {
		name     string
		contents []pt.Instance // stored under one key, each processed in turn
	}{
		{"one object", []pt.Instance{a}},
		{"a key overwritten with other content", []pt.Instance{a, b}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := pt.New()
			p := f.Pipeline()
			names := map[string]bool{}
			var last string
			for i, in := range tt.contents {
				storedAs(f, key(sop1), in.Build(), "MODALITY1", fmt.Sprintf("assoc%d", i), "2026-01-15T10:20:30Z")
				info, err := f.Objects.Head(ctx, key(sop1))
				if err != nil {
					t.Fatal(err)
				}
				last = pipeline.BytesName(info)
				names[last] = true
				if _, err := p.ProcessObject(ctx, key(sop1)); err != nil {
					t.Fatal(err)
				}
			}
			rows, err := f.Index.Instances(ctx, sop1)
			if err != nil || len(rows) != len(tt.contents) {
				t.Fatalf("rows %+v, %v; want one per content", rows, err)
			}
			matching := 0
			for _, r := range rows {
				got, ranged := bulkDataBytes(t, f, r.MetadataKey)
				if !ranged || !names[got] || !strings.HasSuffix(r.MetadataKey, "."+got+".json") {
					t.Errorf("the document %s: its bulk data URI names bytes %q (ranged %v), want its own bytes' name", r.MetadataKey, got, ranged)
				}
				if got == last {
					matching++
				}
			}
			// What the key holds now is one content's bytes alone.
			if matching != 1 {
				t.Errorf("%d documents name the bytes the key holds, want 1", matching)
			}
		})
	}
}

// TestBulkDataURIOfAnEncapsulatedValue: Pixel Data of undefined length
// (encapsulated, JPEG and the like) is named by its offset alone, the value
// being its items up to its Sequence Delimitation Item
// (dataset.EncapsulatedLength); a defined length is named as before. The
// URI said length=4294967295, the undefined-length marker, which a reader
// followed for 4 GiB: to the object's end in S3, elements after Pixel Data
// included.
func TestBulkDataURIOfAnEncapsulatedValue(t *testing.T) {
	frags := [][]byte{{0xFF, 0xD8, 1, 2, 3, 0xFF, 0xD9, 0}, bytes.Repeat([]byte{7}, 300)}
	jpeg := ct(sop1)
	jpeg.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
	jpeg.Extra = []pt.Elem{pt.Fragments(frags...)}
	for _, tt := range []struct {
		name  string
		in    pt.Instance
		value []byte // what the URI names; nil: the native Pixel Data
		named []string
	}{
		{"encapsulated: offset alone", jpeg, pt.FragmentsValue(frags...), []string{"offset", "bytes"}},
		{"native: offset and length", ct(sop1), nil, []string{"offset", "length", "bytes"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := pt.New()
			object := tt.in.Build()
			md := pt.SCPMetadata(pt.CTStorage, sop1, tt.in.TransferSyntaxUID, "")
			if tt.in.TransferSyntaxUID == "" {
				md = pt.SCPMetadata(pt.CTStorage, sop1, tsELE, "")
			}
			f.Objects.Add(key(sop1), object, md)
			value := tt.value
			if value == nil {
				value = nativePixels(tt.in, object)
			}
			checkBulkValue(t, "Pixel Data", object, f.ProcessedBulkDataURIs(t, key(sop1), sop1)["7FE00010"], tt.named, value)
		})
	}
}

// checkBulkValue checks the bulk data URI uri of what, a value of object:
// the parameters it names (of offset, length and bytes), and that the
// value it names is value: the length bytes at offset, or, for an
// encapsulated value (no length), its items from offset up to its
// Sequence Delimitation Item (dataset.EncapsulatedLength).
func checkBulkValue(t *testing.T, what string, object []byte, uri string, named []string, value []byte) {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	var got []string
	for _, p := range []string{"offset", "length", "bytes"} {
		if q.Has(p) {
			got = append(got, p)
		}
	}
	if !slices.Equal(got, named) {
		t.Fatalf("%s's BulkDataURI %s names %v, want %v", what, u, got, named)
	}
	offset, err := strconv.ParseInt(q.Get("offset"), 10, 64)
	if err != nil || offset < 0 || offset > int64(len(object)) {
		t.Fatalf("%s: offset %q of a %d-byte object", what, q.Get("offset"), len(object))
	}
	if q.Has("length") {
		n, err := strconv.ParseInt(q.Get("length"), 10, 64)
		if err != nil || n < 0 || n > int64(len(object))-offset {
			t.Fatalf("%s: length %q from offset %d of a %d-byte object", what, q.Get("length"), offset, len(object))
		}
		if !bytes.Equal(object[offset:offset+n], value) {
			t.Errorf("%s: the %d bytes at offset %d are not its %d bytes", what, n, offset, len(value))
		}
		return
	}
	n, err := dataset.EncapsulatedLength(bufio.NewReader(bytes.NewReader(object[offset:])))
	if err != nil || !bytes.Equal(object[offset:offset+n], value) {
		t.Errorf("%s: the value at offset %d: %d bytes, %v; want the %d bytes of its fragments", what, offset, n, err, len(value))
	}
}

// nativePixels is the native Pixel Data of in, built as object: its last
// element, of 16-bit samples (pt.Instance.Build).
func nativePixels(in pt.Instance, object []byte) []byte {
	return object[len(object)-in.Rows*in.Columns*2:]
}

// TestBulkDataURIOfAnIconImage: an icon's encapsulated Pixel Data, in an
// Icon Image Sequence (0088,0200) item of an object whose own Pixel Data
// is native or encapsulated, is read past (its fragments skipped, the
// elements after the sequence read) and named in the DICOM JSON, inside
// the sequence's item, by its offset alone, as the object's own
// encapsulated Pixel Data is: the value at that offset is the icon's
// items up to its Sequence Delimitation Item (dataset.EncapsulatedLength),
// and the object's own Pixel Data is still named where it lies.
func TestBulkDataURIOfAnIconImage(t *testing.T) {
	icon := [][]byte{{0xFF, 0xD8, 4, 5, 0xFF, 0xD9}, bytes.Repeat([]byte{3}, 64)}
	frame := [][]byte{{0xFF, 0xD8, 1, 2, 3, 0xFF, 0xD9, 0}, bytes.Repeat([]byte{7}, 300)}
	native := ct(sop1)
	native.Extra = []pt.Elem{pt.IconImage(icon...)}
	jpeg := ct(sop1)
	jpeg.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
	jpeg.Extra = []pt.Elem{pt.IconImage(icon...), pt.Fragments(frame...)}
	for _, tt := range []struct {
		name  string
		in    pt.Instance
		ts    string
		frame []byte // the object's own Pixel Data, when encapsulated; nil: native
		named []string
	}{
		{"in a native object", native, tsELE, nil, []string{"offset", "length", "bytes"}},
		{"in an encapsulated object", jpeg, jpeg.TransferSyntaxUID, pt.FragmentsValue(frame...), []string{"offset", "bytes"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := pt.New()
			object := tt.in.Build()
			f.Objects.Add(key(sop1), object, pt.SCPMetadata(pt.CTStorage, sop1, tt.ts, ""))
			uris := f.ProcessedBulkDataURIs(t, key(sop1), sop1)
			if _, ok := uris["00880200/0/7FE00010"]; !ok || len(uris) != 2 {
				t.Fatalf("bulk data URIs %v, want the icon's Pixel Data's, in its item, and the object's", uris)
			}
			checkBulkValue(t, "the icon's Pixel Data", object, uris["00880200/0/7FE00010"], []string{"offset", "bytes"}, pt.FragmentsValue(icon...))
			frame := tt.frame
			if frame == nil {
				frame = nativePixels(tt.in, object)
			}
			checkBulkValue(t, "Pixel Data", object, uris["7FE00010"], tt.named, frame)
		})
	}
}

// TestHeldContentWritesNoDocuments: documents are written for a content
// the index does not hold yet: an identical resend (under a conflict key,
// in either order, or under another day's key), a redelivery, and an
// object indexed before documents were named after their bytes and
// delivered again write none, so every document under metadata/ is one an
// index row names (its metadataKey, the summary beside it), and every
// row's documents exist. Before, a resend wrote documents no row, record
// or event named, and an object indexed before the naming and delivered
// again wrote documents under the new name while its row kept the old.
func TestHeldContentWritesNoDocuments(t *testing.T) {
	nextDay := strings.Replace(key(sop1), "2026/01/15", "2026/01/16", 1)
	legacyJSON := "metadata/2026/01/15/" + study + "/" + series + "/" + sop1 + ".json" // named after the key alone
	tests := []struct {
		name  string
		setup func(t *testing.T, f *pt.Fakes) []string // the keys processed, in order
		want  []pipeline.UpsertOutcome
	}{
		{"an identical resend under a conflict key", func(t *testing.T, f *pt.Fakes) []string {
			return []string{key(sop1), fromTwoAEs(f, "00000000000000aa")}
		}, []pipeline.UpsertOutcome{pipeline.InstanceNew, pipeline.InstanceDuplicate}},
		{"the conflict key's copy processed first", func(t *testing.T, f *pt.Fakes) []string {
			return []string{fromTwoAEs(f, "00000000000000aa"), key(sop1)}
		}, []pipeline.UpsertOutcome{pipeline.InstanceNew, pipeline.InstanceDuplicate}},
		{"an identical resend another day", func(t *testing.T, f *pt.Fakes) []string {
			storedAs(f, key(sop1), ct(sop1).Build(), "MODALITY1", "assoc1", "2026-01-15T10:20:30Z")
			storedAs(f, nextDay, ct(sop1).Build(), "MODALITY1", "assoc2", "2026-01-16T10:20:30Z")
			return []string{key(sop1), nextDay}
		}, []pipeline.UpsertOutcome{pipeline.InstanceNew, pipeline.InstanceDuplicate}},
		{"a redelivery", func(t *testing.T, f *pt.Fakes) []string {
			storedAs(f, key(sop1), ct(sop1).Build(), "MODALITY1", "assoc1", "2026-01-15T10:20:30Z")
			return []string{key(sop1), key(sop1)}
		}, []pipeline.UpsertOutcome{pipeline.InstanceNew, pipeline.InstanceDuplicate}},
		{"indexed before documents were named after their bytes, delivered again", func(t *testing.T, f *pt.Fakes) []string {
			data := ct(sop1).Build()
			storedAs(f, key(sop1), data, "MODALITY1", "assoc1", "2026-01-15T10:20:30Z")
			indexedBefore(t, f, pipeline.InstanceRecord{StudyInstanceUID: study, SeriesInstanceUID: series, SOPInstanceUID: sop1,
				SOPClassUID: pt.CTStorage, ObjectKey: key(sop1), MetadataKey: legacyJSON, Size: int64(len(data)), ContentIdentity: wholeCRC(data)})
			f.Objects.Add(legacyJSON, []byte(`{}`), nil)
			f.Objects.Add(strings.TrimSuffix(legacyJSON, ".json")+".summary.json", []byte(`{}`), nil)
			return []string{key(sop1)}
		}, []pipeline.UpsertOutcome{pipeline.InstanceDuplicate}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := pt.New()
			p := f.Pipeline()
			for i, k := range tt.setup(t, f) {
				if res, err := p.ProcessObject(ctx, k); err != nil || res.Outcome != tt.want[i] {
					t.Fatalf("delivery %d: outcome %v, %v; want %v", i, res.Outcome, err, tt.want[i])
				}
			}
			rows, err := f.Index.Instances(ctx, sop1)
			if err != nil || len(rows) != 1 {
				t.Fatalf("rows %+v, %v; want the content's one", rows, err)
			}
			named := map[string]bool{}
			for _, r := range rows {
				named[r.MetadataKey] = true
				named[strings.TrimSuffix(r.MetadataKey, ".json")+".summary.json"] = true
			}
			var documents []string
			for _, k := range f.Objects.Keys() {
				if strings.HasPrefix(k, pipeline.MetadataPrefix) {
					documents = append(documents, k)
				}
			}
			var want []string
			for k := range named {
				want = append(want, k)
			}
			slices.Sort(want)
			slices.Sort(documents)
			if d := cmp.Diff(want, documents); d != "" {
				t.Errorf("documents under metadata/ (-named by the index +stored):\n%s", d)
			}
		})
	}
}
