package stack

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/constructs-go/constructs/v10"

	"github.com/dicom-ingest/dicom-ingest/infra/config"
)

var update = flag.Bool("update", false, "rewrite testdata/stateful-resources.json from the synthesized example environments")

// statefulGolden is testdata/stateful-resources.json: what an upgrade must
// keep of each example environment's stateful resources.
const statefulGolden = "testdata/stateful-resources.json"

// regenerate is what a developer runs once an upgrade step is written.
const regenerate = "go test ./infra/stack -run TestStatefulResourcesStable -update"

// statefulKind is a resource type that holds what users would miss if
// CloudFormation replaced it, and the properties whose change would.
//
// Replacement lists the properties the CloudFormation Template Reference
// marks "Update requires: Replacement" (for AWS::KMS::Key, those whose
// change fails the update instead: the key cannot be replaced), the same
// as each type's registry schema's createOnlyProperties, with
// DynamoDB's KeySchema and LocalSecondaryIndexes added (a table's key and
// its local indexes are fixed when it is created):
//   - AWS::DynamoDB::Table https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-dynamodb-table.html
//     (and its LocalSecondaryIndex: "Updates are not supported",
//     https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-properties-dynamodb-table-localsecondaryindex.html)
//   - AWS::S3::Bucket https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-s3-bucket.html
//   - AWS::KMS::Key https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-kms-key.html
//     ("If you change the value of the KeySpec, KeyUsage, Origin, or
//     MultiRegion properties of an existing KMS key, the update request
//     fails, regardless of the value of the UpdateReplacePolicy attribute")
//   - AWS::SecretsManager::Secret https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-secretsmanager-secret.html
//   - AWS::Backup::BackupVault https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-backup-backupvault.html
//   - AWS::EFS::FileSystem https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-efs-filesystem.html
//   - AWS::Logs::LogGroup https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-logs-loggroup.html
//   - AWS::SQS::Queue https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-sqs-queue.html
//   - AWS::Events::Archive https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-events-archive.html
//   - AWS::Events::EventBus https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-events-eventbus.html
//     (Name, its registry schema's one createOnlyProperty)
//
// NewValue lists the properties whose change keeps the resource but not
// its value: a changed GenerateSecretString makes Secrets Manager generate
// a new version of the secret ("When you make a change to this property, a
// new secret version is created", CfnSecretProps in the CDK API reference,
// https://docs.aws.amazon.com/cdk/api/v2/docs/aws-cdk-lib.aws_secretsmanager.CfnSecretProps.html).
//
// notRetained exempts a kind from the Retain policy: an identity others
// depend on rather than a store of data, which Retain would not keep for
// them. Its entry says why.
type statefulKind struct {
	noun string
	// data is what stays behind in the retained old resource, or what
	// goes with the old one.
	data        string
	replacement []string
	newValue    []string
	notRetained bool
}

var statefulKinds = map[string]statefulKind{
	"AWS::DynamoDB::Table": {noun: "table",
		data:        "its items (the study index, or the audit trail) stay in the retained old table",
		replacement: []string{"ImportSourceSpecification", "KeySchema", "LocalSecondaryIndexes", "TableName"}},
	"AWS::S3::Bucket": {noun: "bucket",
		data:        "its objects stay in the retained old bucket",
		replacement: []string{"BucketName", "ObjectLockEnabled"}},
	"AWS::KMS::Key": {noun: "key",
		data:        "what was encrypted under it (objects, items, logs, secrets) still needs the retained old key, which the stack no longer manages",
		replacement: []string{"KeySpec", "KeyUsage", "MultiRegion", "Origin"}},
	"AWS::SecretsManager::Secret": {noun: "secret",
		data:        "its value stays in the retained old secret, and the new secret gets a new one (a new log-name key names objects differently from every retained log line; a new PSK no longer matches the site's device)",
		replacement: []string{"Name"},
		newValue:    []string{"GenerateSecretString", "SecretString"}},
	"AWS::Backup::BackupVault": {noun: "backup vault",
		data:        "its recovery points stay in the retained old vault",
		replacement: []string{"BackupVaultName", "EncryptionKeyArn"}},
	"AWS::EFS::FileSystem": {noun: "file system",
		data:        "objects staged on it and not yet uploaded stay on the retained old file system, which no task mounts",
		replacement: []string{"AvailabilityZoneName", "Encrypted", "KmsKeyId", "PerformanceMode"}},
	"AWS::Logs::LogGroup": {noun: "log group",
		data:        "its log events stay in the retained old group",
		replacement: []string{"LogGroupClass", "LogGroupName"}},
	"AWS::SQS::Queue": {noun: "queue",
		data:        "its messages (in flight, or in a dead-letter queue awaiting a redrive) stay in the retained old queue, which nothing reads; redrive them to the new one",
		replacement: []string{"FifoQueue", "QueueName"}},
	"AWS::Events::Archive": {noun: "event archive",
		data:        "its archived events stay in the retained old archive, replayable only to the bus it archives",
		replacement: []string{"ArchiveName", "SourceArn"}},
	// The bus's Name comes from its construct path
	// (DicomIngest<env>PipelineBus…): renaming or moving the construct
	// replaces the bus. Its subscribers' rules are on the bus and their
	// configurations name it (the stack's output EventBusName), so the
	// replacement drops every one of them: deleting a bus deletes its
	// rules. It is pinned, but not retained: a bus holds no data
	// (EventBridge keeps no event on it; the retained archive keeps them),
	// what a replacement loses is its name and its rules, and a retained
	// old bus would keep its rules with no function publishing to it any
	// more. After the stack's deletion a retained bus would keep its name,
	// the very name the stack created again for the same environment gives
	// its new bus: that creation would fail (the name is taken).
	"AWS::Events::EventBus": {noun: "event bus",
		data:        "every subscriber's rules on the old bus go with it (deleting a bus deletes its rules) and the new bus has another name, so no subscriber receives an event until it puts its rules on the new bus",
		replacement: []string{"Name"},
		notRetained: true},
}

// statefulResource is one stateful resource as the golden file records
// it. Path is its construct path under the stack, to tell a renamed
// logical id from a removed resource.
type statefulResource struct {
	Type                string         `json:"type"`
	Path                string         `json:"path"`
	DeletionPolicy      string         `json:"deletionPolicy,omitempty"`
	UpdateReplacePolicy string         `json:"updateReplacePolicy,omitempty"`
	Replacement         map[string]any `json:"replacement,omitempty"`
	NewValue            map[string]any `json:"newValue,omitempty"`
}

// statefulResources returns the template's stateful resources by logical id.
func (s *synthesized) statefulResources() map[string]statefulResource {
	paths := map[string]string{}
	prefix := *s.stack.Node().Path() + "/"
	for _, node := range *s.stack.Node().FindAll(constructs.ConstructOrder_PREORDER) {
		if res, ok := node.(awscdk.CfnResource); ok {
			paths[*s.stack.GetLogicalId(res)] = strings.TrimPrefix(*node.Node().Path(), prefix)
		}
	}
	out := map[string]statefulResource{}
	for id, r := range s.res {
		typ, _ := r["Type"].(string)
		kind, ok := statefulKinds[typ]
		if !ok {
			continue
		}
		sr := statefulResource{Type: typ, Path: paths[id]}
		sr.DeletionPolicy, _ = r["DeletionPolicy"].(string)
		sr.UpdateReplacePolicy, _ = r["UpdateReplacePolicy"].(string)
		sr.Replacement = pick(props(r), kind.replacement)
		sr.NewValue = pick(props(r), kind.newValue)
		out[id] = sr
	}
	return out
}

// pick returns the named properties that p sets, or nil if none.
func pick(p map[string]any, names []string) map[string]any {
	var out map[string]any
	for _, n := range names {
		if v, ok := p[n]; ok {
			if out == nil {
				out = map[string]any{}
			}
			out[n] = v
		}
	}
	return out
}

// TestStatefulResourcesStable: an upgrade (`cdk deploy` of a newer
// version over a running environment) replaces no stateful resource and
// regenerates no secret's value. CloudFormation replaces a resource whose
// logical id changes (a construct renamed or moved) or whose
// replacement-requiring property changes; with Retain the old one is kept
// but orphaned, and the new deployment starts empty. The example
// environments' stateful resources are pinned in testdata: their logical
// ids, construct paths and those properties. Every one must also be
// retained on deletion and on replacement, but for a kind that says why
// not (statefulKind.notRetained: the event bus).
func TestStatefulResourcesStable(t *testing.T) {
	got := map[string]map[string]statefulResource{}
	for _, env := range envs {
		got[env] = synthEnv(t, env, example(env)).statefulResources()
	}
	for _, env := range envs {
		for _, id := range slices.Sorted(maps.Keys(got[env])) {
			r := got[env][id]
			if statefulKinds[r.Type].notRetained {
				continue
			}
			if r.DeletionPolicy != "Retain" || r.UpdateReplacePolicy != "Retain" {
				t.Errorf("%s: %s %s (%s): DeletionPolicy %q, UpdateReplacePolicy %q; want both Retain (RemovalPolicy_RETAIN): deleting the stack or replacing it would delete what it holds",
					env, statefulKinds[r.Type].noun, id, r.Path, r.DeletionPolicy, r.UpdateReplacePolicy)
			}
		}
	}
	if *update {
		b, err := json.MarshalIndent(got, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(statefulGolden), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(statefulGolden, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	b, err := os.ReadFile(statefulGolden)
	if errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%v (create it with `%s`)", err, regenerate)
	}
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]map[string]statefulResource
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatalf("%s: %v", statefulGolden, err)
	}
	for _, env := range envs {
		for _, p := range upgradeProblems(want[env], got[env]) {
			t.Errorf("%s: %s", env, p)
		}
	}
}

// allOptionalFeatures is prod (which has most optional features: DICOM
// TLS, the audit feed, staging with backups, a locked backup vault, Object
// Lock, the client VPN, Storage Commitment) with every other one on too:
// keys of its own for the TLS and feed secrets, a client CRL, the feed's
// client certificate, backup copies to another vault, a lock changeable
// for a while, every site's PACS. The plain listener is off, as only
// this variant has it.
func allOptionalFeatures() func() (*config.Config, error) {
	return variant("prod", "allon", func(c *config.Config) {
		off := false
		c.Dicom.TLS.PlainListener = &off
		c.Dicom.TLS.SecretKmsKeyArn = tlsOnlySecretKey
		c.Dicom.TLS.ClientCrlPEM = "-----BEGIN X509 CRL-----\n(as Load reads it)\n-----END X509 CRL-----\n"
		c.Pipeline.BackupCopy = &config.BackupCopy{VaultArn: "arn:aws:backup:eu-central-1:210987654321:backup-vault:dicom-ingest-copies"}
		c.Pipeline.BackupVaultLock.ChangeableForDays = new(3)
		c.Audit.Syslog.ClientCertificateSecretArn = "arn:aws:secretsmanager:eu-west-1:222222222222:secret:dicom-ingest/siem-client-d4E5f6"
		c.Audit.Syslog.SecretKmsKeyArn = "arn:aws:kms:eu-west-1:222222222222:key/abcd1234-12ab-34cd-56ef-1234567890ab"
		for i := range c.Sites {
			c.Sites[i].QuarantinedCommitted = true
			if c.Sites[i].Name == "northside" { // the one without
				c.Sites[i].Pacs = &config.Pacs{Host: "172.20.4.20", Port: 104}
			}
		}
	})
}

// TestOptionalStatefulResourcesPinned: the golden pins the example
// environments' stateful resources, and a stateful resource only an
// optional feature they leave off creates would be pinned nowhere, its
// replacement by an upgrade unseen. With every optional feature on, each
// stateful resource is one the golden pins (the same logical id, type and
// construct path in dev or prod) and is retained as TestStatefulResourcesStable
// requires. None is missing; a feature that adds one fails here until an
// example environment has it.
func TestOptionalStatefulResourcesPinned(t *testing.T) {
	b, err := os.ReadFile(statefulGolden)
	if err != nil {
		t.Fatal(err)
	}
	var golden map[string]map[string]statefulResource
	if err := json.Unmarshal(b, &golden); err != nil {
		t.Fatalf("%s: %v", statefulGolden, err)
	}
	got := synthEnv(t, "allon", allOptionalFeatures()).statefulResources()
	for _, id := range slices.Sorted(maps.Keys(got)) {
		r := got[id]
		pinned := false
		for _, env := range envs {
			if w, ok := golden[env][id]; ok && w.Type == r.Type && w.Path == r.Path {
				pinned = true
			}
		}
		if !pinned {
			t.Errorf("%s %s (%s), created with an optional feature on, is pinned by no example environment in %s: turn the feature on in infra/config/dev.json or prod.json and regenerate with `%s`",
				statefulKinds[r.Type].noun, id, r.Path, statefulGolden, regenerate)
		}
		if !statefulKinds[r.Type].notRetained && (r.DeletionPolicy != "Retain" || r.UpdateReplacePolicy != "Retain") {
			t.Errorf("%s %s (%s): DeletionPolicy %q, UpdateReplacePolicy %q; want both Retain", statefulKinds[r.Type].noun, id, r.Path, r.DeletionPolicy, r.UpdateReplacePolicy)
		}
	}
}

// upgradeProblems says what deploying a stack whose stateful resources are
// now over one whose resources were was would do to them, one sentence each.
func upgradeProblems(was, now map[string]statefulResource) []string {
	const step = "write an upgrade step in docs/operations/deploy.md (Upgrades) and then regenerate with `" + regenerate + "`"
	var out []string
	renamed := map[string]bool{}
	for _, id := range slices.Sorted(maps.Keys(was)) {
		w := was[id]
		kind := statefulKinds[w.Type]
		n, ok := now[id]
		if !ok {
			if newID := successor(was, now, w.Type); newID != "" {
				renamed[newID] = true
				out = append(out, fmt.Sprintf("would replace %s %s (%s): its logical id becomes %s (%s); %s, the new deployment starts empty; %s",
					kind.noun, id, w.Path, newID, now[newID].Path, kind.data, step))
				continue
			}
			out = append(out, fmt.Sprintf("would remove %s %s (%s) from the stack: %s, orphaned, and nothing of the new deployment uses it; %s",
				kind.noun, id, w.Path, kind.data, step))
			continue
		}
		if n.Type != w.Type {
			out = append(out, fmt.Sprintf("would replace %s %s (%s): its type becomes %s; %s, the new deployment starts empty; %s",
				kind.noun, id, w.Path, n.Type, kind.data, step))
			continue
		}
		for _, prop := range kind.replacement {
			if !reflect.DeepEqual(w.Replacement[prop], n.Replacement[prop]) {
				what := fmt.Sprintf("would replace %s %s (%s): its %s changes from %s to %s; %s, the new deployment starts empty",
					kind.noun, id, w.Path, prop, js(w.Replacement[prop]), js(n.Replacement[prop]), kind.data)
				if w.Type == "AWS::KMS::Key" {
					what = fmt.Sprintf("would fail the update of %s %s (%s): its %s changes from %s to %s, which a KMS key cannot",
						kind.noun, id, w.Path, prop, js(w.Replacement[prop]), js(n.Replacement[prop]))
				}
				out = append(out, what+"; "+step)
			}
		}
		for _, prop := range kind.newValue {
			if !reflect.DeepEqual(w.NewValue[prop], n.NewValue[prop]) {
				out = append(out, fmt.Sprintf("would give %s %s (%s) a new value: its %s changes from %s to %s; %s",
					kind.noun, id, w.Path, prop, js(w.NewValue[prop]), js(n.NewValue[prop]), step))
			}
		}
		if n.Path != w.Path {
			out = append(out, fmt.Sprintf("%s %s moved from %s to %s and kept its logical id: nothing is replaced; regenerate with `%s`",
				kind.noun, id, w.Path, n.Path, regenerate))
		}
	}
	for _, id := range slices.Sorted(maps.Keys(now)) {
		if _, ok := was[id]; ok || renamed[id] {
			continue
		}
		n := now[id]
		out = append(out, fmt.Sprintf("new %s %s (%s): nothing is replaced; add it with `%s`",
			statefulKinds[n.Type].noun, id, n.Path, regenerate))
	}
	return out
}

// successor returns the logical id of the one resource of type typ that
// now has and was had not, if exactly one of that type also went away:
// the same resource under a new logical id (its construct renamed or
// moved), as far as a template can tell.
func successor(was, now map[string]statefulResource, typ string) string {
	count := func(a, b map[string]statefulResource) []string {
		var ids []string
		for _, id := range slices.Sorted(maps.Keys(a)) {
			if _, ok := b[id]; !ok && a[id].Type == typ {
				ids = append(ids, id)
			}
		}
		return ids
	}
	gone, added := count(was, now), count(now, was)
	if len(gone) == 1 && len(added) == 1 {
		return added[0]
	}
	return ""
}

// TestUpgradeProblems: what TestStatefulResourcesStable says of each kind
// of change, without synthesizing.
func TestUpgradeProblems(t *testing.T) {
	table := statefulResource{Type: "AWS::DynamoDB::Table", Path: "Pipeline/IndexTable/Resource",
		Replacement: map[string]any{"KeySchema": []any{map[string]any{"AttributeName": "pk", "KeyType": "HASH"}}}}
	secret := statefulResource{Type: "AWS::SecretsManager::Secret", Path: "Storage/LogNameKey/Resource",
		NewValue: map[string]any{"GenerateSecretString": map[string]any{"PasswordLength": float64(64)}}}
	key := statefulResource{Type: "AWS::KMS::Key", Path: "Storage/Key/Resource"}
	with := func(r statefulResource, f func(r *statefulResource)) statefulResource {
		r.Replacement, r.NewValue = maps.Clone(r.Replacement), maps.Clone(r.NewValue)
		f(&r)
		return r
	}
	was := map[string]statefulResource{"IndexTable1": table, "LogNameKey1": secret, "Key1": key}
	bus := statefulResource{Type: "AWS::Events::EventBus", Path: "Pipeline/Bus/Resource",
		Replacement: map[string]any{"Name": "DicomIngestdevPipelineBus71E88082"}}
	withBus := maps.Clone(was)
	withBus["PipelineBus1"] = bus
	tests := []struct {
		name string
		was  map[string]statefulResource // nil: was
		now  map[string]statefulResource
		want []string // substrings, one per problem, in order
	}{
		{"unchanged", nil, was, nil},
		{"table renamed", nil, map[string]statefulResource{"LogNameKey1": secret, "Key1": key,
			"StudyIndex2": with(table, func(r *statefulResource) { r.Path = "Pipeline/StudyIndex/Resource" })},
			[]string{"would replace table IndexTable1 (Pipeline/IndexTable/Resource): its logical id becomes StudyIndex2 (Pipeline/StudyIndex/Resource); its items (the study index, or the audit trail) stay in the retained old table, the new deployment starts empty; write an upgrade step"}},
		{"table removed", nil, map[string]statefulResource{"LogNameKey1": secret, "Key1": key},
			[]string{"would remove table IndexTable1"}},
		{"table named", nil, map[string]statefulResource{"LogNameKey1": secret, "Key1": key,
			"IndexTable1": with(table, func(r *statefulResource) { r.Replacement["TableName"] = "index" })},
			[]string{`would replace table IndexTable1 (Pipeline/IndexTable/Resource): its TableName changes from null to "index"`}},
		{"key spec", nil, map[string]statefulResource{"IndexTable1": table, "LogNameKey1": secret,
			"Key1": with(key, func(r *statefulResource) { r.Replacement = map[string]any{"KeySpec": "HMAC_256"} })},
			[]string{`would fail the update of key Key1 (Storage/Key/Resource): its KeySpec changes from null to "HMAC_256"`}},
		{"secret regenerated", nil, map[string]statefulResource{"IndexTable1": table, "Key1": key,
			"LogNameKey1": with(secret, func(r *statefulResource) {
				r.NewValue["GenerateSecretString"] = map[string]any{"PasswordLength": float64(32)}
			})},
			[]string{`would give secret LogNameKey1 (Storage/LogNameKey/Resource) a new value: its GenerateSecretString changes from {"PasswordLength":64} to {"PasswordLength":32}`}},
		{"two tables, one new", nil, map[string]statefulResource{"IndexTable1": table, "LogNameKey1": secret, "Key1": key,
			"CommitmentsTable": with(table, func(r *statefulResource) { r.Path = "Pipeline/CommitmentsTable/Resource" })},
			[]string{"new table CommitmentsTable (Pipeline/CommitmentsTable/Resource): nothing is replaced"}},
		{"moved, id kept", nil, map[string]statefulResource{"IndexTable1": table, "LogNameKey1": secret,
			"Key1": with(key, func(r *statefulResource) { r.Path = "Keys/Key/Resource" })},
			[]string{"key Key1 moved from Storage/Key/Resource to Keys/Key/Resource and kept its logical id: nothing is replaced"}},
		{"bus renamed", withBus, map[string]statefulResource{"IndexTable1": table, "LogNameKey1": secret, "Key1": key,
			"PipelineEvents2": with(bus, func(r *statefulResource) {
				r.Path, r.Replacement["Name"] = "Pipeline/Events/Resource", "DicomIngestdevPipelineEventsA1B2C3D4"
			})},
			[]string{"would replace event bus PipelineBus1 (Pipeline/Bus/Resource): its logical id becomes PipelineEvents2 (Pipeline/Events/Resource); every subscriber's rules on the old bus go with it"}},
		{"bus named", withBus, map[string]statefulResource{"IndexTable1": table, "LogNameKey1": secret, "Key1": key,
			"PipelineBus1": with(bus, func(r *statefulResource) { r.Replacement["Name"] = "dicom.ingest" })},
			[]string{`would replace event bus PipelineBus1 (Pipeline/Bus/Resource): its Name changes from "DicomIngestdevPipelineBus71E88082" to "dicom.ingest"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := was
			if tt.was != nil {
				before = tt.was
			}
			got := upgradeProblems(before, tt.now)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%s", len(got), len(tt.want), strings.Join(got, "\n"))
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d:\n%s\nwant it to contain\n%s", i, got[i], w)
				}
			}
		})
	}
}
