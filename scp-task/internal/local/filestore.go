package local

import (
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/filestore"
)

// defaultObjectStore opens the file store on dir. Objects are files at
// dir/<key>, which is the layout files (the pipeline's reader) relies on.
func defaultObjectStore(names *logname.Namer) func(dir string, handedBack func(key string, note []byte, release func())) (ObjectStore, error) {
	return func(dir string, handedBack func(string, []byte, func())) (ObjectStore, error) {
		return filestore.New(dir, filestore.WithNames(names), filestore.WithReplayHeld(handedBack))
	}
}
