package awsadapters

import (
	"crypto/sha256"
	"encoding/hex"
)

// maxKeyBytes bounds a key value built from outside data: DynamoDB refuses
// a partition key over 2,048 bytes and a sort key over 1,024, in a table
// and in an index alike.
const maxKeyBytes = 1024

// keyValue is prefix and v as a key attribute: v itself, or, when the two
// would pass maxKeyBytes, v's SHA-256 in hex. Writes and queries build keys
// through it alike, so a long value is still found. Values come from
// objects: a Patient ID of 3,000 characters (its VR allows 64) made every
// write of its audit record and study fail, and its message went to the
// dead-letter queue with nothing audited.
func keyValue(prefix, v string) string {
	if len(prefix)+len(v) <= maxKeyBytes {
		return prefix + v
	}
	h := sha256.Sum256([]byte(v))
	return prefix + "sha256:" + hex.EncodeToString(h[:])
}
