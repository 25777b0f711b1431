// Package version identifies this build of dicom-ingest on the wire (the
// DICOM implementation class UID and version name) and in stored metadata.
package version

// Version is the release, overridden at link time with
// -ldflags "-X github.com/dicom-ingest/dicom-ingest/shared/version.Version=…".
var Version = "0.1.0-dev"

// ImplementationClassUID identifies dicom-ingest in A-ASSOCIATE items and
// in the File Meta Information of every stored object. It is a UUID-derived
// UID (PS3.5 B.2) so it needs no registered root.
const ImplementationClassUID = "2.25.227175395194688166540786081746053443792"

// ImplementationVersionName is sent with ImplementationClassUID; DICOM
// allows at most 16 characters.
const ImplementationVersionName = "DICOMINGEST_0_1"
