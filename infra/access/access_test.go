package access

import (
	"slices"
	"testing"
)

// TestAllowing: a grant covers its action on its resource only, objects by
// key prefix (IAM's "prefix*"), a table's indexes apart from the table.
func TestAllowing(t *testing.T) {
	for _, tc := range []struct {
		name, fn, action, resource string
		want                       bool
	}{
		{"object under a read prefix", FnValidate, "s3:GetObject", ObjectResource("incoming/2026/01/15/a/b/c.dcm"), true},
		{"object outside the prefixes", FnValidate, "s3:GetObject", ObjectResource("audit/2026/01/15/x.json"), false},
		{"a prefix's look-alike", FnValidate, "s3:GetObject", ObjectResource("incomingx/a.dcm"), false},
		{"write under a write prefix", FnValidate, "s3:PutObject", ObjectResource("metadata/a.json"), true},
		{"write under a read prefix", FnValidate, "s3:PutObject", ObjectResource("incoming/a.dcm"), false},
		{"copied tags", FnValidate, "s3:PutObjectTagging", ObjectResource("quarantine/a.dcm"), true},
		{"the copy's source tags", FnValidate, "s3:GetObjectTagging", ObjectResource("incoming/a.dcm"), true},
		// validate PUTs sidecars to metadata/ without tags and copies
		// nothing there: it was granted s3:PutObjectTagging on every
		// prefix it writes.
		{"no tags where nothing is copied", FnValidate, "s3:PutObjectTagging", ObjectResource("metadata/a.json"), false},
		{"tags without CopyTags", FnCommitment, "s3:GetObjectTagging", ObjectResource("incoming/a.dcm"), false},
		{"table action", FnAudit, "dynamodb:GetItem", TableResource(IndexTable), true},
		{"not on the other table", FnAudit, "dynamodb:GetItem", TableResource(AuditTable), false},
		// audit finds a quarantined object's copy in its rejected record,
		// and may not read quarantine/.
		{"a resend's quarantined object's record", FnAudit, "dynamodb:Query", TableIndexResource(AuditTable, "bySop"), true},
		{"no read of quarantine/", FnAudit, "s3:GetObject", ObjectResource("quarantine/a.dcm"), false},
		{"a Query of the table is not of its index", FnValidate, "dynamodb:Query", TableIndexResource(IndexTable, "byPending"), false},
		{"a granted index", FnNotify, "dynamodb:Query", TableIndexResource(IndexTable, "byPending"), true},
		{"listing", FnAudit, "s3:ListBucket", BucketResource, true},
		{"listing: validate's missing indexed object", FnValidate, "s3:ListBucket", BucketResource, true},
		{"no listing", FnNotify, "s3:ListBucket", BucketResource, false},
		{"events", FnNotify, "events:PutEvents", BusResource, true},
		{"no events", FnAudit, "events:PutEvents", BusResource, false},
		{"undeclared function", "auditfeed", "dynamodb:GetItem", TableResource(AuditTable), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := len(Functions[tc.fn].Allowing(tc.action, tc.resource)) > 0; got != tc.want {
				t.Errorf("%s may %s on %s: %v, want %v", tc.fn, tc.action, tc.resource, got, tc.want)
			}
		})
	}
}

// TestCopiesWithinGrants: a function's copies go from a prefix it reads to
// one it writes (CopyObject reads the source and writes the copy).
func TestCopiesWithinGrants(t *testing.T) {
	for name, f := range Functions {
		for _, c := range f.Copies {
			if !slices.Contains(f.Read, c.From) || !slices.Contains(f.Write, c.To) {
				t.Errorf("%s copies %s to %s: it reads %v and writes %v", name, c.From, c.To, f.Read, f.Write)
			}
		}
	}
}
