// Package schemas embeds the versioned JSON Schemas (draft 2020-12) of the
// detail of every event the pipeline publishes, one file per detail-type
// and version: <detail-type slug>.v<N>.json. They are open to additions:
// an object may hold properties its schema does not list (a consumer
// validating with them survives version 1's additions), while the tests
// validate the pipeline's events against a strict variant derived from
// these files (see docs/pipeline.md, Compatibility).
package schemas

import (
	"embed"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// FS holds the schema files.
//
//go:embed *.json
var FS embed.FS

// File maps each detail-type (pipeline.DetailTypes) to its current schema
// file.
var File = map[string]string{
	pipeline.DetailTypeInstanceStored:      "instance-stored.v1.json",
	pipeline.DetailTypeInstanceRejected:    "instance-rejected.v1.json",
	pipeline.DetailTypeStudyReceived:       "study-received.v1.json",
	pipeline.DetailTypeStudyUpdated:        "study-updated.v1.json",
	pipeline.DetailTypeCommitmentCompleted: "storage-commitment-completed.v1.json",
}
