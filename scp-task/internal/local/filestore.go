package local

import (
	"log/slog"

	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/filestore"
)

// defaultObjectStore opens the file store on dir, keeping minFree bytes of
// its disk in reserve and logging to log (its disk running out of space,
// its journal's replays). Objects are files at dir/<key>, which is the
// layout files (the pipeline's reader) relies on.
func defaultObjectStore(names *logname.Namer, minFree int64, log *slog.Logger) func(dir string, handedBack func(key string, note []byte, release func())) (ObjectStore, error) {
	return func(dir string, handedBack func(string, []byte, func())) (ObjectStore, error) {
		return filestore.New(dir, filestore.WithNames(names), filestore.WithReplayHeld(handedBack),
			filestore.WithMinFreeBytes(uint64(max(minFree, 0))), filestore.WithLogger(log))
	}
}
