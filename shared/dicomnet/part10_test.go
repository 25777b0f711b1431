package dicomnet_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
)

func TestReadFileMetaTestdata(t *testing.T) {
	dir := dicomTestdata(t)
	files, _ := filepath.Glob(filepath.Join(dir, "*.dcm"))
	if len(files) == 0 {
		t.Skip("no testdata")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(bytes.NewReader(b))
			m, err := dicomnet.ReadFileMeta(r)
			if err != nil {
				t.Fatal(err)
			}
			if !dicomuid.ValidUID(m.SOPClassUID) || !dicomuid.ValidUID(m.SOPInstanceUID) {
				t.Errorf("%+v", m)
			}
			if _, ok := dicomuid.LookupTransferSyntax(m.TransferSyntaxUID); !ok {
				t.Errorf("transfer syntax %q", m.TransferSyntaxUID)
			}
			rest, _ := io.ReadAll(r)
			if !bytes.Equal(rest, b[m.DataSetOffset:]) || !bytes.Equal(rest, part10DataSet(t, f)) {
				t.Errorf("data set offset %d wrong", m.DataSetOffset)
			}
		})
	}
}

func TestReadFileMetaErrors(t *testing.T) {
	pre := append(make([]byte, 128), "DICM"...)
	tests := map[string][]byte{
		"empty":      nil,
		"no DICM":    make([]byte, 200),
		"no meta":    append(pre, 8, 0, 0x18, 0, 'U', 'I', 2, 0, '1', 0),
		"truncated":  append(pre, 2, 0, 2, 0, 'U', 'I', 10, 0, '1'),
		"huge value": append(pre, 2, 0, 1, 0, 'O', 'B', 0, 0, 0xFF, 0xFF, 0xFF, 0x7F),
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := dicomnet.ReadFileMeta(bufio.NewReader(bytes.NewReader(b))); !errors.Is(err, dicomnet.ErrNotPart10) {
				t.Errorf("err = %v", err)
			}
		})
	}
}

// TestStoreFileEveryTestdataFile sends every file of the dicom module's testdata (deflated included) with
// StoreFile and checks the server received the file's data set bytes unchanged in the file's transfer syntax.
func TestStoreFileEveryTestdataFile(t *testing.T) {
	dir := dicomTestdata(t)
	files, _ := filepath.Glob(filepath.Join(dir, "*.dcm"))
	ch := make(chan result, 1)
	srv := dicomnettest.NewServerT(t, &dicomnet.Server{Handler: capture(ch)})
	var contexts []dicomnet.ProposedContext
	metas := map[string]dicomnet.FileMeta{}
	for _, f := range files {
		fh, _ := os.Open(f)
		m, err := dicomnet.ReadFileMeta(bufio.NewReader(fh))
		fh.Close()
		if err != nil {
			t.Fatal(err)
		}
		metas[f] = m
		contexts = append(contexts, dicomnet.ProposedContext{AbstractSyntax: m.SOPClassUID, TransferSyntaxes: []string{m.TransferSyntaxUID}})
	}
	ctx := context.Background()
	a, err := dicomnet.Dial(ctx, srv.Addr, dicomnet.ClientConfig{CallingAE: "SCU", CalledAE: "SCP", Contexts: contexts, MaxSendPDULength: 16384})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release(ctx)
	for _, f := range files {
		st, err := a.StoreFile(ctx, f)
		if err != nil || !st.IsSuccess() {
			t.Fatalf("%s: %v %v", f, st, err)
		}
		got := <-ch
		want := part10DataSet(t, f)
		if len(want)%2 == 1 {
			want = append(want, 0) // odd data sets are padded
		}
		if !bytes.Equal(got.data, want) {
			t.Errorf("%s: data set differs", f)
		}
		if got.req.TransferSyntaxUID != metas[f].TransferSyntaxUID || got.req.AffectedSOPInstanceUID != metas[f].SOPInstanceUID {
			t.Errorf("%s: request %+v", f, got.req)
		}
	}
}

func FuzzReadFileMeta(f *testing.F) {
	pre := append(make([]byte, 128), "DICM"...)
	f.Add(append(append([]byte{}, pre...), 2, 0, 2, 0, 'U', 'I', 4, 0, '1', '.', '2', 0, 2, 0, 3, 0, 'U', 'I', 2, 0, '1', 0, 2, 0, 0x10, 0, 'U', 'I', 2, 0, '1', 0, 8, 0))
	f.Add(append(append([]byte{}, pre...), 2, 0, 1, 0, 'O', 'B', 0, 0, 2, 0, 0, 0, 0, 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := dicomnet.ReadFileMeta(bufio.NewReader(bytes.NewReader(b)))
		if err == nil && (m.DataSetOffset < 132 || m.DataSetOffset > int64(len(b))) {
			t.Fatalf("offset %d of %d", m.DataSetOffset, len(b))
		}
	})
}
