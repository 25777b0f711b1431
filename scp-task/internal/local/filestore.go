package local

import (
	"errors"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
)

// defaultObjectStore opens the file store on dir.
var defaultObjectStore = func(dir string) (objectstore.Store, error) {
	return nil, errors.New("local: file store not wired yet")
}
