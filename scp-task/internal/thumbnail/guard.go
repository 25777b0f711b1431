package thumbnail

import (
	"bufio"
	"bytes"
	"fmt"
	"io"

	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
)

// checkStructure guards the parser. github.com/suyashkumar/dicom allocates
// each element's value from its declared length before reading it, so a
// few hundred bytes declaring a 4 GiB element cost 4 GiB. Before the
// object reaches it, the module's one element reader (package dataset)
// reads the data set to its last byte under its limits, and refuses it
// when it cannot be followed or a length runs past the end. The SCP
// refuses such objects at C-STORE already; this keeps an object stored
// before that check, or by anything else, from reaching the parser.
func checkStructure(obj []byte) error {
	br := bufio.NewReader(bytes.NewReader(obj))
	meta, err := part10.ReadMeta(br)
	if err != nil {
		return err
	}
	in := dataset.NewInspector(br, meta.TransferSyntaxUID)
	if _, err := io.Copy(io.Discard, in); err != nil {
		return fmt.Errorf("data set: %w", err)
	}
	return nil
}
