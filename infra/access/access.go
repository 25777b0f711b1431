// Package access declares what each pipeline function may do with the
// stack's data: per function, the resources (the index and audit tables
// and their indexes, prefixes of the DICOM bucket, the event bus) and the
// actions on each. Function.Grants is the one walk of a declaration:
// infra/stack builds the functions' IAM statements from its grants, and
// the emulated chain (test/pipeline) checks every call a function makes
// against them, so the grants and the code cannot drift apart unnoticed.
// It has no CDK dependency.
package access

import (
	"slices"
	"strings"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
)

// Function names: functions/<name>.
const (
	FnValidate   = "validate"
	FnAudit      = "audit"
	FnNotify     = "notify"
	FnCommitment = "commitment"
)

// The stack's tables, as a Call names them.
const (
	IndexTable = "index"
	AuditTable = "audit"
)

// Table is what a function calls on one table: the DynamoDB actions on the
// table itself, and the indexes it queries.
type Table struct {
	Actions []string
	Queries []string
}

// Function is what a function's code calls (functions/<name> through
// shared/awsadapters), and so all it may do. infra/stack turns its Grants
// into the role's statements; nothing else grants a pipeline function data
// access.
type Function struct {
	Index, Audit Table
	// Read and Write are key prefixes of the DICOM bucket: s3:GetObject
	// (GET and HEAD) on Read, s3:PutObject on Write.
	Read, Write []string
	// Copies are the server-side copies the function makes, from a Read
	// prefix to a Write prefix: CopyObject copies the source's tags by
	// default, so it may read the tags under each From
	// (s3:GetObjectTagging) and set them under each To
	// (s3:PutObjectTagging), and nowhere else (its PUTs set no tags).
	Copies []Copy
	// ListBucket lets S3 answer 404, not 403, to a HEAD of a missing key,
	// for a function that asks whether an object exists.
	ListBucket bool
	PutEvents  bool
}

// Copy is a server-side copy between key prefixes of the bucket.
type Copy struct{ From, To string }

// Functions lists per function the calls its code makes; the comment of
// each names the code paths.
var Functions = map[string]Function{
	// validate (pipeline.ProcessObject): HEAD and ranged GET of the
	// incoming object; PUT of the sidecars (metadata/) and findings, and
	// CopyObject of an invalid object (quarantine/); the index's
	// UpsertInstance (GetItem, UpdateItem, PutItem, Query of the study's
	// partition); the audit record (a conditional PutItem); the published
	// marks (GetItem, PutItem); PutEvents. A ranged GET of the object
	// already indexed under the instance, to compare its content
	// (sameContent), where a missing object is an answer (not the same
	// content), not an error: S3 says 404 only to a caller that may list
	// the bucket, and a 403 would fail the message at every receive, to
	// the dead-letter queue.
	FnValidate: {
		Index:      Table{Actions: []string{"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"}},
		Audit:      Table{Actions: []string{"dynamodb:PutItem"}},
		Read:       []string{objectstore.IncomingPrefix},
		Write:      []string{objectstore.MetadataPrefix, objectstore.QuarantinePrefix},
		Copies:     []Copy{{From: objectstore.IncomingPrefix, To: objectstore.QuarantinePrefix}},
		ListBucket: true, PutEvents: true,
	},
	// audit (pipeline.ProcessAuditRecord): GET of the association record;
	// HEAD and ranged GET of the incoming object a resend duplicates (its
	// study and patient name the resend's record), where a missing object
	// is an answer (the SCP's record stands alone), not an error: S3 says
	// 404 only to a caller that may list the bucket, and a 403 would fail
	// the record at every receive; the index's Instances (GetItem of the
	// SOP item, Query of a study's partition) for the identity the held
	// object is recorded under, and NoteSent of the resend's study (a
	// conditional UpdateItem); the audit record (a conditional PutItem);
	// for a resend of an object validation quarantined, that object's
	// rejected record, naming its quarantined copy (the audit trail's bySop
	// index, Query: pipeline.heldQuarantine), rather than a HEAD of
	// quarantine/, which would let it read the quarantined copies.
	FnAudit: {
		Index:      Table{Actions: []string{"dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem"}},
		Audit:      Table{Actions: []string{"dynamodb:PutItem"}, Queries: []string{"bySop"}},
		Read:       []string{objectstore.AuditPrefix, objectstore.IncomingPrefix},
		ListBucket: true,
	},
	// notify (pipeline.AnnounceStableStudies): StableStudies (Query of
	// byPending, GetItem), the study's detail (Query of its partition), the
	// published marks (GetItem, PutItem), MarkAnnounced and, after a failed
	// announcement, DeferAnnouncement (UpdateItem); PutEvents. No object
	// access.
	FnNotify: {
		Index:     Table{Actions: []string{"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"}, Queries: []string{"byPending"}},
		PutEvents: true,
	},
	// commitment (ProcessCommitmentRequest, RunCommitments): GET of the
	// request and of its results, PUT of results; HEAD of the instances'
	// incoming objects, where a missing object is an answer (not stored),
	// not an error: S3 says 404 only to a caller that may list the bucket.
	// The transactions in the index table (PutItem, GetItem, Query of
	// byPending), the instances and studies (Query, GetItem), MarkAnnounced
	// and the published marks (UpdateItem, GetItem, PutItem); the audit
	// trail's bySop index (Query) and its own records (PutItem); PutEvents.
	FnCommitment: {
		Index:      Table{Actions: []string{"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"}, Queries: []string{"byPending"}},
		Audit:      Table{Actions: []string{"dynamodb:PutItem"}, Queries: []string{"bySop"}},
		Read:       []string{objectstore.CommitmentRequestsPrefix, objectstore.IncomingPrefix, objectstore.CommitmentResultsPrefix},
		Write:      []string{objectstore.CommitmentResultsPrefix},
		ListBucket: true, PutEvents: true,
	},
}

// CopiedFrom are the prefixes f copies from, each once, in Copies' order.
func (f Function) CopiedFrom() []string { return f.copied(func(c Copy) string { return c.From }) }

// CopiedTo are the prefixes f copies to, each once, in Copies' order.
func (f Function) CopiedTo() []string { return f.copied(func(c Copy) string { return c.To }) }

func (f Function) copied(end func(Copy) string) []string {
	var out []string
	for _, c := range f.Copies {
		if p := end(c); !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// Grant is one action on one resource, as a Function grants it.
type Grant struct {
	Action   string
	Resource Resource
}

func (g Grant) String() string { return g.Action + " " + g.Resource.String() }

// Resource is what a Grant is on: one of the stack's tables (Table), one
// of a table's indexes (Table and Index), the objects under a key prefix
// of the DICOM bucket (Prefix), the bucket or the event bus. infra/stack
// turns each into its ARN; String names it as a Call does.
type Resource struct {
	Kind         ResourceKind
	Table, Index string
	Prefix       string
}

// ResourceKind is the kind of a Grant's Resource.
type ResourceKind int

const (
	KindTable ResourceKind = iota + 1
	KindTableIndex
	KindObjects
	KindBucket
	KindBus
)

// String is the resource as a Call names it: a table ("table/index"), a
// table's index ("table/index/index/byPending"), objects under a key
// prefix ("object/incoming/"), the bucket ("bucket") or the event bus
// ("bus").
func (r Resource) String() string {
	switch r.Kind {
	case KindTable:
		return TableResource(r.Table)
	case KindTableIndex:
		return TableIndexResource(r.Table, r.Index)
	case KindObjects:
		return ObjectResource(r.Prefix)
	case KindBucket:
		return BucketResource
	case KindBus:
		return BusResource
	}
	return ""
}

// Resource names of a Call (and, through Resource.String, of a Grant).
func TableResource(table string) string             { return "table/" + table }
func TableIndexResource(table, index string) string { return "table/" + table + "/index/" + index }
func ObjectResource(key string) string              { return "object/" + key }

const (
	BucketResource = "bucket"
	BusResource    = "bus"
)

// Grants lists what f grants, one action on one resource each: the one
// walk of a Function, from which infra/stack builds the role's statements
// and by which the emulated chain's grants check allows each call.
func (f Function) Grants() []Grant {
	var out []Grant
	for _, tb := range []struct {
		name string
		t    Table
	}{{IndexTable, f.Index}, {AuditTable, f.Audit}} {
		for _, a := range tb.t.Actions {
			out = append(out, Grant{a, Resource{Kind: KindTable, Table: tb.name}})
		}
		for _, ix := range tb.t.Queries {
			out = append(out, Grant{"dynamodb:Query", Resource{Kind: KindTableIndex, Table: tb.name, Index: ix}})
		}
	}
	for _, o := range []struct {
		action   string
		prefixes []string
	}{{"s3:GetObject", f.Read}, {"s3:PutObject", f.Write}, {"s3:GetObjectTagging", f.CopiedFrom()}, {"s3:PutObjectTagging", f.CopiedTo()}} {
		for _, p := range o.prefixes {
			out = append(out, Grant{o.action, Resource{Kind: KindObjects, Prefix: p}})
		}
	}
	if f.ListBucket {
		out = append(out, Grant{"s3:ListBucket", Resource{Kind: KindBucket}})
	}
	if f.PutEvents {
		out = append(out, Grant{"events:PutEvents", Resource{Kind: KindBus}})
	}
	return out
}

// Covers reports whether g allows action on resource: the same action, on
// the same resource or, for objects, on a key under g's prefix (IAM's
// "prefix*").
func (g Grant) Covers(action, resource string) bool {
	if g.Action != action {
		return false
	}
	if g.Resource.Kind == KindObjects {
		return strings.HasPrefix(resource, g.Resource.String())
	}
	return g.Resource.String() == resource
}

// Allowing returns the grants of f that allow action on resource; none
// means IAM refuses the call (AccessDenied). It walks f's Grants afresh at
// each call, about 2 µs for a dozen grants: its caller, the emulated
// chain's grants check, asks once per recorded call, each of which was an
// HTTP round trip through the recorder to an emulator, and a Function is a
// plain value with nowhere to keep a walk that could not go stale.
func (f Function) Allowing(action, resource string) []Grant {
	return slices.DeleteFunc(f.Grants(), func(g Grant) bool { return !g.Covers(action, resource) })
}
