package portal

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/filestore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
)

// testObjectSize is the size of the object writeTestObject stores at
// objectPath.
const testObjectSize = 300

// testObject is the object writeTestObject stores: no two bytes in a row
// alike, so that a range served from the wrong place shows.
func testObject() []byte {
	b := make([]byte, testObjectSize)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

// writeTestObject stores testObject at objectPath under dir, as the file
// store keeps it, and returns its bytes' id (pipeline.BytesName).
func writeTestObject(t testing.TB, dir string) string {
	t.Helper()
	return writeObject(t, dir, objectPath, testObject())
}

// writeObject stores b at path (/objects/<key>) under dir, as the file
// store keeps it, and returns its bytes' id (pipeline.BytesName).
func writeObject(t testing.TB, dir, path string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(path, "/objects/")))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum, err := filestore.FileCRC64NVME(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return pipeline.BytesName(pipeline.ObjectInfo{ChecksumCRC64NVME: sum})
}

// TestBulkDataURIs: /objects/<key> serves what a DICOM JSON's bulk data URI
// names, <objectUri>?offset=<o>&length=<n>&bytes=<id> (pipeline.bulkURIs):
// exactly that range, 200, application/octet-stream with its
// Content-Length, once the object's Head says the key holds the bytes named
// (bytes, pipeline.BytesName); bytes alone (a Deflated data set's URI) the
// whole object. It served the whole Part 10 file whatever the query, so a
// developer following a Pixel Data URI got the file, not the value. Bytes
// of another content are a 412 naming bytes, a range past the object's end
// or a malformed value a 400 naming its parameter (the malformed ones for
// every route: TestEveryRouteRefusesBadParameters). A Range header is not
// read, as before: the answer is whole.
func TestBulkDataURIs(t *testing.T) {
	srv, _ := newTestServer(t)
	id := writeTestObject(t, t.TempDir()) // the same bytes: the same id
	obj := testObject()
	const doc = "/objects/metadata/1.2.3.1.1.json"
	for _, tt := range []struct {
		name, path, rangeHeader string
		code                    int
		contentType             string
		body                    []byte
		says                    string // in a refusal
	}{
		{"no query: the object", objectPath, "", 200, "application/dicom", obj, ""},
		{"a value", objectPath + "?offset=10&length=20&bytes=" + id, "", 200, "application/octet-stream", obj[10:30], ""},
		{"a value without bytes (an earlier build's URI)", objectPath + "?offset=10&length=20", "", 200, "application/octet-stream", obj[10:30], ""},
		{"to the object's end", objectPath + "?offset=290&length=10&bytes=" + id, "", 200, "application/octet-stream", obj[290:], ""},
		{"none of it", objectPath + "?offset=300&length=0&bytes=" + id, "", 200, "application/octet-stream", []byte{}, ""},
		{"bytes alone: the object (a Deflated data set's URI)", objectPath + "?bytes=" + id, "", 200, "application/dicom", obj, ""},
		{"a Range header is not read", objectPath, "bytes=0-9", 200, "application/dicom", obj, ""},
		{"a Range header with a value's query", objectPath + "?offset=10&length=20", "bytes=0-1", 200, "application/octet-stream", obj[10:30], ""},
		{"other bytes", objectPath + "?offset=10&length=20&bytes=crc64nvme-0123456789abcdef", "", 412, "", nil, "portal: bytes names other bytes than the object holds"},
		{"bytes of an older form", objectPath + "?bytes=sha256-" + strings.Repeat("0", 64), "", 412, "", nil, "portal: bytes names other bytes"},
		{"bytes too long", objectPath + "?bytes=" + strings.Repeat("a", 129), "", 400, "", nil, "portal: bytes is the id of the object's bytes"},
		{"offset past the end", objectPath + "?offset=301&length=0&bytes=" + id, "", 400, "", nil, "portal: offset is a byte offset within the object, at most its size, 300"},
		{"length past the end", objectPath + "?offset=290&length=11&bytes=" + id, "", 400, "", nil, "portal: length is a number of bytes that ends within the object: at most 10 from offset 290"},
		{"the largest length", objectPath + "?offset=1&length=9223372036854775807", "", 400, "", nil, "portal: length is a number of bytes that ends within the object"},
		{"the largest offset", objectPath + "?offset=9223372036854775807&length=9223372036854775807", "", 400, "", nil, "portal: offset is a byte offset within the object"},
		{"an offset no int64 holds", objectPath + "?offset=9223372036854775808&length=1", "", 400, "", nil, "portal: offset is a byte offset in the object, a whole number of 0 or more"},
		{"a negative offset", objectPath + "?offset=-1&length=1", "", 400, "", nil, "portal: offset is a byte offset in the object"},
		{"a signed offset", objectPath + "?offset=%2B1&length=1", "", 400, "", nil, "portal: offset is a byte offset in the object"},
		{"a fractional length", objectPath + "?offset=1&length=1.5", "", 400, "", nil, "portal: length is a number of bytes"},
		{"offset alone where no encapsulated value lies", objectPath + "?offset=1&bytes=" + id, "", 400, "", nil, "portal: offset alone names the encapsulated value that starts there"},
		{"length without offset", objectPath + "?length=1", "", 400, "", nil, "portal: offset is a byte offset in the object, a whole number of 0 or more, given with length"},
		{"offset given twice", objectPath + "?offset=1&offset=2&length=1", "", 400, "", nil, "portal: offset is one value, given once"},
		{"a document has no bulk data", doc + "?offset=0&length=1", "", 400, "", nil, "portal: offset, length and bytes name the bytes of a stored DICOM object"},
		{"a document, bytes alone", doc + "?bytes=" + id, "", 400, "", nil, "portal: offset, length and bytes name the bytes of a stored DICOM object"},
		{"an object not stored", "/objects/incoming/2026/11/26/1.2.3/1.2.3.1/1.2.3.1.9.dcm?offset=0&length=1&bytes=" + id, "", 404, "", nil, "not found"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.rangeHeader != "" {
				req.Header.Set("Range", tt.rangeHeader)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			checkAnswer(t, resp, tt.code, tt.says, tt.contentType, tt.body, strings.Contains(tt.path, "bytes="))
		})
	}
}

// TestBulkDataRangeReadsTheRange: a value's range is streamed from the
// object, and only it is read, whatever the object's size; a HEAD reads
// none of it, and says its length.
func TestBulkDataRangeReadsTheRange(t *testing.T) {
	const size = 64 << 20
	for _, tc := range []struct {
		method string
		want   int64
	}{{http.MethodHead, 0}, {http.MethodGet, 1000}} {
		t.Run(tc.method, func(t *testing.T) {
			var read atomic.Int64
			srv := httptest.NewServer((&Server{Objects: countingOpener{size, &read}, Logger: errorLogger(t)}).Handler())
			defer srv.Close()
			resp, body := request(t, srv, tc.method, objectPath+"?offset=1048576&length=1000")
			if resp.StatusCode != 200 || resp.Header.Get("Content-Length") != "1000" || int64(body.Len()) != tc.want {
				t.Errorf("%s: %s, Content-Length %q, %d bytes; want 200, 1000, %d", tc.method, resp.Status, resp.Header.Get("Content-Length"), body.Len(), tc.want)
			}
			if got := read.Load(); got != tc.want {
				t.Errorf("%s read %d bytes of the object, want %d", tc.method, got, tc.want)
			}
		})
	}
}

// TestBulkDataEncapsulatedValue: a bulk data URI of offset alone
// (pipeline.bulkURIs for a value of undefined length: encapsulated Pixel
// Data) serves the encapsulated value that starts there, its items up to
// and including its Sequence Delimitation Item, not what follows it, 200
// with its Content-Length; items that cannot be followed or that run past
// the object are a 400 naming offset. The URI said length=4294967295, the
// undefined-length marker, refused as a range past the object: such a URI
// of an earlier build's document is read as offset alone.
func TestBulkDataEncapsulatedValue(t *testing.T) {
	dir := t.TempDir()
	srv := httptest.NewServer((&Server{Objects: dirOpener(dir), Logger: errorLogger(t)}).Handler())
	defer srv.Close()
	head := testObject()[:20] // where the data set's other elements lie
	value := pipelinetest.FragmentsValue([]byte{0xFF, 0xD8, 1, 2, 3, 0xFF, 0xD9, 0}, bytes.Repeat([]byte{9}, 300))
	after := []byte{0xFA, 0xFF, 0xFA, 0xFF, 'O', 'B', 0, 0, 4, 0, 0, 0, 'p', 'a', 'd', '.'} // an element after Pixel Data
	object := bytes.Join([][]byte{head, value, after}, nil)
	path := func(name string) string { return strings.Replace(objectPath, "1.2.3.1.1.dcm", name+".dcm", 1) }
	id := writeObject(t, dir, path("1.2.3.1.2"), object)
	cut := writeObject(t, dir, path("1.2.3.1.3"), bytes.Join([][]byte{head, value[:len(value)-8]}, nil))
	undefined := writeObject(t, dir, path("1.2.3.1.4"), bytes.Join([][]byte{head, value[:8], {0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF}, value[8:]}, nil))
	for _, tt := range []struct {
		name, path string
		code       int
		body       []byte
		says       string
	}{
		{"the value", path("1.2.3.1.2") + "?offset=20&bytes=" + id, 200, value, ""},
		{"without bytes", path("1.2.3.1.2") + "?offset=20", 200, value, ""},
		{"with its length, as a range", path("1.2.3.1.2") + "?offset=20&length=" + strconv.Itoa(len(value)) + "&bytes=" + id, 200, value, ""},
		{"an earlier build's URI: the undefined-length marker as its length", path("1.2.3.1.2") + "?offset=20&length=4294967295&bytes=" + id, 200, value, ""},
		{"not where the value starts", path("1.2.3.1.2") + "?offset=0&bytes=" + id, 400, nil, "portal: offset alone names the encapsulated value that starts there"},
		{"at the object's end", path("1.2.3.1.2") + "?offset=" + strconv.Itoa(len(object)) + "&bytes=" + id, 400, nil, "portal: offset alone names the encapsulated value"},
		{"past the object's end", path("1.2.3.1.2") + "?offset=" + strconv.Itoa(len(object)+1) + "&bytes=" + id, 400, nil, "portal: offset is a byte offset within the object"},
		{"other bytes", path("1.2.3.1.2") + "?offset=20&bytes=" + cut, 412, nil, "portal: bytes names other bytes"},
		{"no delimiter before the object's end", path("1.2.3.1.3") + "?offset=20&bytes=" + cut, 400, nil, "dataset ends inside (7FE0,0010)"},
		{"a fragment of undefined length", path("1.2.3.1.4") + "?offset=20&bytes=" + undefined, 400, nil, "fragment of undefined length"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := srv.Client().Get(srv.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			checkAnswer(t, resp, tt.code, tt.says, "application/octet-stream", tt.body, true)
		})
	}
}

// TestBulkDataEncapsulatedValueReadsItsItemHeaders: finding where an
// encapsulated value ends reads its item headers, not its fragments: a
// HEAD reads a few KiB of a 16 MiB value and says its length; a GET then
// streams the value.
func TestBulkDataEncapsulatedValueReadsItsItemHeaders(t *testing.T) {
	frame := make([]byte, 4<<20)
	value := pipelinetest.FragmentsValue(frame, frame, frame, frame)
	for _, tc := range []struct {
		method  string
		atMost  int64
		atLeast int64
	}{{http.MethodHead, 64 << 10, 0}, {http.MethodGet, int64(len(value)) + 64<<10, int64(len(value))}} {
		t.Run(tc.method, func(t *testing.T) {
			var read atomic.Int64
			srv := httptest.NewServer((&Server{Objects: memOpener{value, &read}, Logger: errorLogger(t)}).Handler())
			defer srv.Close()
			resp, _ := request(t, srv, tc.method, objectPath+"?offset=0")
			if resp.StatusCode != 200 || resp.Header.Get("Content-Length") != strconv.Itoa(len(value)) {
				t.Errorf("%s: %s, Content-Length %q; want 200, %d", tc.method, resp.Status, resp.Header.Get("Content-Length"), len(value))
			}
			if got := read.Load(); got > tc.atMost || got < tc.atLeast {
				t.Errorf("%s read %d bytes of the object, want %d to %d", tc.method, got, tc.atLeast, tc.atMost)
			}
		})
	}
}

// memOpener is a stored object held in memory, its bytes read counted.
type memOpener struct {
	b    []byte
	read *atomic.Int64
}

func (o memOpener) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	return o.OpenRange(ctx, key, 0, -1)
}

// Head is the object's size; its bytes are named by no checksum.
func (o memOpener) Head(_ context.Context, key string) (pipeline.ObjectInfo, error) {
	return pipeline.ObjectInfo{Key: key, Size: int64(len(o.b))}, nil
}

func (o memOpener) OpenRange(_ context.Context, _ string, offset, length int64) (io.ReadCloser, error) {
	end := int64(len(o.b))
	if length >= 0 {
		end = min(end, offset+length)
	}
	return io.NopCloser(countingReader{bytes.NewReader(o.b[offset:end]), o.read}), nil
}

// checkAnswer checks a bulk data URI's answer, resp, read whole: its
// status code; a refusal's body says says; a 200 has contentType and the
// body want, and, if withLength, want's Content-Length.
func checkAnswer(t *testing.T, resp *http.Response, code int, says, contentType string, want []byte, withLength bool) {
	t.Helper()
	defer resp.Body.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != code {
		t.Fatalf("%d %.300s, want %d", resp.StatusCode, body.String(), code)
	}
	if code != 200 {
		if !strings.Contains(body.String(), says) {
			t.Errorf("%d %.300s, want it to say %q", resp.StatusCode, body.String(), says)
		}
		return
	}
	if ct := resp.Header.Get("Content-Type"); ct != contentType {
		t.Errorf("Content-Type %q, want %q", ct, contentType)
	}
	if !bytes.Equal(body.Bytes(), want) {
		t.Errorf("served %d bytes %.64x, want %d bytes %.64x", body.Len(), body.Bytes(), len(want), want)
	}
	if cl := resp.Header.Get("Content-Length"); withLength && cl != strconv.Itoa(len(want)) {
		t.Errorf("Content-Length %q, want %d", cl, len(want))
	}
}

// request sends a method request for path to srv and returns the answer
// with its body, read whole.
func request(t *testing.T, srv *httptest.Server, method, path string) (*http.Response, *bytes.Buffer) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	return resp, &body
}

// TestBulkDataIconImage: the bulk data URI the pipeline's DICOM JSON gives
// an icon's encapsulated Pixel Data (in an Icon Image Sequence (0088,0200)
// item, offset alone, pipeline.bulkURIs) is served as the icon's value,
// its items up to its Sequence Delimitation Item (dataset.EncapsulatedLength
// from the item headers), not the object's Pixel Data after it; the
// object's own Pixel Data, native or encapsulated, is served from its URI
// beside it.
func TestBulkDataIconImage(t *testing.T) {
	const sop = "1.2.3.1.1"
	icon := [][]byte{{0xFF, 0xD8, 4, 5, 0xFF, 0xD9}, bytes.Repeat([]byte{3}, 64)}
	frame := [][]byte{{0xFF, 0xD8, 1, 2, 3, 0xFF, 0xD9, 0}, bytes.Repeat([]byte{7}, 300)}
	in := pipelinetest.Instance{StudyUID: "1.2.3", SeriesUID: "1.2.3.1", SOPUID: sop, PatientID: "P1", PatientName: "Icon^Test",
		Rows: 4, Columns: 4, Extra: []pipelinetest.Elem{pipelinetest.IconImage(icon...)}}
	jpeg := in
	jpeg.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
	jpeg.Extra = append(slices.Clone(in.Extra), pipelinetest.Fragments(frame...))
	for _, tc := range []struct {
		name   string
		in     pipelinetest.Instance
		ts     string
		pixels func(object []byte) []byte // what the object's Pixel Data URI names
	}{
		{"native object", in, "1.2.840.10008.1.2.1", func(object []byte) []byte { return object[len(object)-4*4*2:] }},
		{"encapsulated object", jpeg, jpeg.TransferSyntaxUID, func([]byte) []byte { return pipelinetest.FragmentsValue(frame...) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			object := tc.in.Build()
			f := pipelinetest.New()
			key := "incoming/2026/01/15/1.2.3/1.2.3.1/" + sop + ".dcm"
			f.Objects.Add(key, object, pipelinetest.SCPMetadata(pipelinetest.CTStorage, sop, tc.ts, ""))
			uris := f.ProcessedBulkDataURIs(t, key, sop)
			dir := t.TempDir()
			srv := httptest.NewServer((&Server{Objects: dirOpener(dir), Logger: errorLogger(t)}).Handler())
			defer srv.Close()
			id := writeObject(t, dir, objectPath, object)
			for _, v := range []struct {
				path string
				want []byte
			}{
				{"00880200/0/7FE00010", pipelinetest.FragmentsValue(icon...)},
				{"7FE00010", tc.pixels(object)},
			} {
				u, err := url.Parse(uris[v.path])
				if err != nil || uris[v.path] == "" {
					t.Fatalf("%s: BulkDataURI %q (%v) of %v", v.path, uris[v.path], err, uris)
				}
				q := u.Query()
				q.Set(pipeline.BulkDataBytesParam, id) // the bytes as the file store names them
				resp, err := srv.Client().Get(srv.URL + objectPath + "?" + q.Encode())
				if err != nil {
					t.Fatal(err)
				}
				checkAnswer(t, resp, 200, "", "application/octet-stream", v.want, true)
			}
		})
	}
}
