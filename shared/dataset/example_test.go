package dataset_test

import (
	"bytes"
	"fmt"
	"io"

	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
)

// An SCP learns the identifiers of a received dataset before choosing the
// object's key, then stores the Part 10 header and the dataset as received
// (group 0002 elements removed), all while streaming. Had the dataset ended
// inside an element, the copy would have failed with the verdict (Err).
func ExampleInspector_Peek() {
	// A dataset in Implicit VR Little Endian: a stray (0002,0010) element
	// that belongs to the File Meta Information, (0008,0018) SOP Instance
	// UID and (0020,000E) Series Instance UID.
	received := bytes.NewReader([]byte("" +
		"\x02\x00\x10\x00\x04\x00\x00\x001.2\x00" +
		"\x08\x00\x18\x00\x06\x00\x00\x001.2.3\x00" +
		"\x20\x00\x0e\x00\x04\x00\x00\x001.4\x00"))

	in := dataset.NewInspector(received, "1.2.840.10008.1.2", dataset.DropGroup0002())
	body, err := in.Peek()
	if err != nil {
		fmt.Println("association broke:", err)
		return
	}
	hdr := in.Header()
	fmt.Println(hdr.SOPInstanceUID, hdr.SeriesInstanceUID, hdr.Group0002Dropped, hdr.Err)

	meta := part10.Meta{
		MediaStorageSOPClassUID:    "1.2.840.10008.5.1.4.1.1.7",
		MediaStorageSOPInstanceUID: hdr.SOPInstanceUID,
		TransferSyntaxUID:          "1.2.840.10008.1.2",
	}
	file := io.MultiReader(bytes.NewReader(part10.AppendHeader(nil, meta)), body)
	n, err := io.Copy(io.Discard, file) // the store's Put would read it
	fmt.Println(n-int64(part10.HeaderSize(meta)), "dataset bytes stored;", err, in.Err())
	// Output:
	// 1.2.3 1.4 true <nil>
	// 26 dataset bytes stored; <nil> <nil>
}
