package local

import (
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/filestore"
)

// defaultObjectStore opens the file store on dir. Objects are files at
// dir/<key>, which is the layout files (the pipeline's reader) relies on.
func defaultObjectStore(names *logname.Namer) func(dir string) (ObjectStore, error) {
	return func(dir string) (ObjectStore, error) { return filestore.New(dir, filestore.WithNames(names)) }
}
