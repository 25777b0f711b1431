package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestBulkDataURIsServeTheValue: a preserved DICOM JSON's Pixel Data
// BulkDataURI, followed as a developer would in local mode, serves the
// element's value, the bytes another reader (suyashkumar/dicom) reads from
// the object, not the whole Part 10 file the portal served whatever the
// query; a Deflated data set's URI (bytes alone) serves the object; the
// same URI with bytes of another content (another data directory's) is a
// 412 naming bytes and serves nothing of the object. An encapsulated
// Pixel Data's URI (every compressed object of the mixed set: JPEG,
// JPEG-LS, RLE, JPEG 2000) names its offset alone and serves the value
// there: the Basic Offset Table's item, an item for each fragment
// suyashkumar/dicom reads, and the Sequence Delimitation Item, the object's
// bytes from offset. It said length=4294967295, the undefined-length
// marker, which the portal now reads as offset alone, and in S3 a read to
// the object's end.
func TestBulkDataURIsServeTheValue(t *testing.T) {
	need(t, "dcmsend")
	dir := t.TempDir()
	n := newNode(t, filepath.Join(dir, "data"))
	n.start()
	files := append(testenv.DICOMTestdataFiles(t), testenv.CorpusFiles(t, "mixed")...)
	if out, err := n.dcmsend("LOCAL_AE", files...); err != nil {
		t.Fatalf("dcmsend: %v\n%s", err, out)
	}
	if failed := n.waitPipelineIdle(30 * time.Second); failed != 0 {
		t.Fatalf("%d objects failed in the pipeline", failed)
	}
	ranged, whole, encapsulated := 0, 0, 0
	for _, s := range n.studies() {
		var page apiStudyPage
		n.getJSON("/api/studies/"+url.PathEscape(s.StudyInstanceUID), &page)
		for _, in := range page.Instances {
			var doc map[string]struct {
				BulkDataURI string `json:"BulkDataURI"`
			}
			if err := json.Unmarshal(n.object(in.MetadataKey), &doc); err != nil {
				t.Fatalf("the DICOM JSON of %s: %v", in.ObjectKey, err)
			}
			pixels, ok := doc["7FE00010"]
			if !ok {
				continue // no Pixel Data (the mixed set's Basic Text SR)
			}
			uri := pixels.BulkDataURI
			objectURI, query, _ := strings.Cut(uri, "?")
			if objectURI != "http://"+n.portal+"/objects/"+in.ObjectKey {
				t.Errorf("%s: Pixel Data's BulkDataURI %q names another object", in.ObjectKey, uri)
				continue
			}
			q, err := url.ParseQuery(query)
			if err != nil || q.Get(pipeline.BulkDataBytesParam) == "" {
				t.Errorf("%s: Pixel Data's BulkDataURI %q names no bytes (%v)", in.ObjectKey, uri, err)
				continue
			}
			object := n.object(in.ObjectKey)
			var want []byte
			switch {
			case q.Get("length") == strconv.FormatUint(0xFFFFFFFF, 10):
				t.Errorf("%s: Pixel Data's BulkDataURI %q names the undefined-length marker as its length", in.ObjectKey, uri)
				continue
			case q.Has("offset") && !q.Has("length"): // encapsulated
				want = encapsulatedValue(t, in.ObjectKey, object, q.Get("offset"))
				encapsulated++
			case q.Has("offset"):
				want = pixelDataValue(t, in.ObjectKey, object)
				ranged++
			default: // Deflated: the object
				want = object
				whole++
			}
			code, _, got := getBody(t, uri)
			if code != http.StatusOK || !bytes.Equal(got, want) {
				t.Errorf("%s: GET %s: %d, %d bytes; want 200 and the %d bytes of the value", in.ObjectKey, uri, code, len(got), len(want))
			}
			q.Set(pipeline.BulkDataBytesParam, "crc64nvme-0000000000000000")
			if code, _, got := getBody(t, objectURI+"?"+q.Encode()); code != http.StatusPreconditionFailed || !strings.Contains(string(got), "bytes names other bytes") {
				t.Errorf("%s: another content's bytes: %d %.200s, want 412 naming bytes", in.ObjectKey, code, got)
			}
		}
	}
	if ranged == 0 || whole == 0 || encapsulated == 0 {
		t.Errorf("followed %d ranged, %d whole and %d encapsulated Pixel Data URIs, want some of each", ranged, whole, encapsulated)
	}
}

// encapsulatedValue is the encapsulated Pixel Data value of the Part 10
// object b that starts at offset: the Basic Offset Table's item, which
// suyashkumar/dicom skips, as the object holds it there, then an item for
// each fragment suyashkumar/dicom reads, then the Sequence Delimitation
// Item.
func encapsulatedValue(t *testing.T, key string, b []byte, offset string) []byte {
	t.Helper()
	at, err := strconv.ParseInt(offset, 10, 64)
	if err != nil || at < 0 || at+8 > int64(len(b)) {
		t.Fatalf("%s: offset %q in a %d-byte object", key, offset, len(b))
	}
	ds, err := dicom.Parse(bytes.NewReader(b), int64(len(b)), nil)
	if err != nil {
		t.Fatalf("%s: suyashkumar/dicom: %v", key, err)
	}
	e, err := ds.FindElementByTag(tag.PixelData)
	if err != nil {
		t.Fatalf("%s: suyashkumar/dicom: %v", key, err)
	}
	info := dicom.MustGetPixelDataInfo(e.Value)
	if !info.IsEncapsulated {
		t.Fatalf("%s: suyashkumar/dicom reads native Pixel Data where the URI names an encapsulated value", key)
	}
	item := func(v []byte, n uint32) []byte {
		return binary.LittleEndian.AppendUint32(append(v, 0xFE, 0xFF, 0x00, 0xE0), n)
	}
	table := 8 + int64(binary.LittleEndian.Uint32(b[at+4:]))
	if !bytes.Equal(b[at:at+4], []byte{0xFE, 0xFF, 0x00, 0xE0}) || at+table > int64(len(b)) {
		t.Fatalf("%s: no Basic Offset Table's item at offset %d", key, at)
	}
	want := bytes.Clone(b[at : at+table])
	for _, f := range info.Frames {
		want = append(item(want, uint32(len(f.EncapsulatedData.Data))), f.EncapsulatedData.Data...)
	}
	return append(want, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0)
}

// pixelDataValue is the value of the Pixel Data element of the Part 10
// object b, as suyashkumar/dicom reads it unprocessed.
func pixelDataValue(t *testing.T, key string, b []byte) []byte {
	t.Helper()
	ds, err := dicom.Parse(bytes.NewReader(b), int64(len(b)), nil, dicom.SkipProcessingPixelDataValue())
	if err != nil {
		t.Fatalf("%s: suyashkumar/dicom: %v", key, err)
	}
	e, err := ds.FindElementByTag(tag.PixelData)
	if err != nil {
		t.Fatalf("%s: suyashkumar/dicom: %v", key, err)
	}
	return dicom.MustGetPixelDataInfo(e.Value).UnprocessedValueData
}

// getBody GETs url and returns the status, the headers and the body.
func getBody(t *testing.T, url string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, resp.Header, b
}
