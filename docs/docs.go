// Package docs gives the programs the documents they ship: the DICOM
// conformance statement, which every site's onboarding kit carries. The
// Markdown here is the one source; nothing copies it into the repository.
// Its tests hold the documents to the code they describe.
package docs

import _ "embed"

// Conformance is conformance.md, the DICOM conformance statement.
//
//go:embed conformance.md
var Conformance []byte
