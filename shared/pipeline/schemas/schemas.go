// Package schemas embeds the versioned JSON Schemas (draft 2020-12) of the
// detail of every event the pipeline publishes, one file per detail-type
// and version: <detail-type slug>.v<N>.json.
package schemas

import "embed"

// FS holds the schema files.
//
//go:embed *.json
var FS embed.FS

// File maps a detail-type to its current schema file.
var File = map[string]string{
	"Instance Stored":   "instance-stored.v1.json",
	"Instance Rejected": "instance-rejected.v1.json",
	"Study Received":    "study-received.v1.json",
	"Study Updated":     "study-updated.v1.json",

	"Storage Commitment Completed": "storage-commitment-completed.v1.json",
}
