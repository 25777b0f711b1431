package dicomnet

import (
	"bufio"
	"context"
	"fmt"
	"os"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
)

// StoreFile sends a Part 10 file: its data set bytes are streamed unchanged in the file's transfer syntax, so a
// presentation context for (SOP class, transfer syntax) must have been accepted.
func (a *ClientAssociation) StoreFile(ctx context.Context, path string) (dimse.Status, error) {
	f, err := os.Open(path)
	if err != nil {
		return dimse.Status{}, fmt.Errorf("dicomnet: store file: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	m, err := part10.ReadMeta(br)
	if err != nil {
		return dimse.Status{}, fmt.Errorf("dicomnet: store file %s: %w", path, err)
	}
	return a.Store(ctx, m.MediaStorageSOPClassUID, m.MediaStorageSOPInstanceUID, m.TransferSyntaxUID, br)
}
