package local

import (
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/filestore"
)

// defaultObjectStore opens the file store on dir, keeping minFree bytes of
// its disk in reserve. Objects are files at dir/<key>, which is the layout
// files (the pipeline's reader) relies on.
func defaultObjectStore(names *logname.Namer, minFree int64) func(dir string, handedBack func(key string, note []byte, release func())) (ObjectStore, error) {
	return func(dir string, handedBack func(string, []byte, func())) (ObjectStore, error) {
		return filestore.New(dir, filestore.WithNames(names), filestore.WithReplayHeld(handedBack),
			filestore.WithMinFreeBytes(uint64(max(minFree, 0))))
	}
}
