package dicomnet_test

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestStoreFileEveryTestdataFile sends every file of the dicom module's testdata (deflated included) with
// StoreFile and checks the server received the file's data set bytes unchanged in the file's transfer syntax.
func TestStoreFileEveryTestdataFile(t *testing.T) {
	dir := testenv.DICOMTestdataDir(t)
	files, _ := filepath.Glob(filepath.Join(dir, "*.dcm"))
	ch := make(chan result, 1)
	srv := dicomnettest.NewServerT(t, &dicomnet.Server{Handler: capture(ch)})
	var contexts []dicomnet.ProposedContext
	metas := map[string]part10.Meta{}
	for _, f := range files {
		fh, _ := os.Open(f)
		m, err := part10.ReadMeta(bufio.NewReader(fh))
		fh.Close()
		if err != nil {
			t.Fatal(err)
		}
		metas[f] = m
		contexts = append(contexts, dicomnet.ProposedContext{AbstractSyntax: m.MediaStorageSOPClassUID, TransferSyntaxes: []string{m.TransferSyntaxUID}})
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
		if got.req.TransferSyntaxUID != metas[f].TransferSyntaxUID || got.req.AffectedSOPInstanceUID != metas[f].MediaStorageSOPInstanceUID {
			t.Errorf("%s: request %+v", f, got.req)
		}
	}
}
