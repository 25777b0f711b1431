package stack

import (
	"encoding/json"
	"fmt"
	"iter"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/infra/access"
	"github.com/dicom-ingest/dicom-ingest/infra/config"
)

// roleStatements returns the Allow statements of the policies attached to
// a role (by its logical id): what the role may do. The stack's Deny
// statements are in resource policies (the bucket's, the file system's),
// none in a role's.
func (s *synthesized) roleStatements(roleID string) []map[string]any {
	var out []map[string]any
	for _, pol := range s.resources("AWS::IAM::Policy") {
		roles, _ := props(pol)["Roles"].([]any)
		if !slices.ContainsFunc(roles, func(r any) bool { return refID(r) == roleID }) {
			continue
		}
		for _, st := range props(pol)["PolicyDocument"].(map[string]any)["Statement"].([]any) {
			if m := st.(map[string]any); m["Effect"] == "Allow" {
				out = append(out, m)
			}
		}
	}
	return out
}

// regionalService matches "<service>.<region>.amazonaws.com" built from
// the AWS::Region pseudo parameter.
var regionalService = regexp.MustCompile(`\{"Fn::Join":\["",\["([a-z0-9-]+)\.",\{"Ref":"AWS::Region"\},"\.amazonaws\.com"\]\]\}`)

// grants renders a role's data-plane statements (DynamoDB, S3, EventBridge,
// SQS, KMS, Secrets Manager) as "action resource[ condition]" lines,
// resources named by what they are (bucket, index, audit, bus, key,
// logNameKey, caSecret) rather than logical ids.
func (s *synthesized) grants(t *testing.T, roleID string) []string {
	t.Helper()
	p := s.stack.Pipeline
	names := map[string]string{
		s.stack.logicalID(s.stack.Storage.Bucket): "bucket", s.stack.logicalID(s.stack.Storage.Key): "key",
		s.stack.logicalID(p.IndexTable): "index", s.stack.logicalID(p.AuditTable): "audit", s.stack.logicalID(p.Bus): "bus",
	}
	for _, q := range p.Queues {
		names[s.stack.logicalID(q.Queue)] = "queue"
	}
	names[s.stack.logicalID(p.NotifyDlq)] = "scheduleDlq"
	names[s.stack.logicalID(p.CommitmentScheduleDlq)] = "scheduleDlq"
	names[s.stack.logicalID(s.stack.Storage.LogNameKey)] = "logNameKey"
	if p.AuditFeed != nil {
		names[s.stack.logicalID(p.AuditFeed.Dlq)] = "onFailureDlq"
	}
	name := func(r any) string {
		if s.cfg.Audit.Syslog != nil && r == s.cfg.Audit.Syslog.CaSecretArn {
			return "caSecret"
		}
		if id := refID(r); id != "" && names[id] != "" {
			return names[id]
		}
		if m, _ := r.(map[string]any); m != nil {
			if j, ok := m["Fn::Join"].([]any); ok {
				parts := j[1].([]any)
				if len(parts) == 2 && names[refID(parts[0])] != "" {
					return names[refID(parts[0])] + fmt.Sprint(parts[1])
				}
			}
		}
		return js(r)
	}
	var out []string
	for _, st := range s.roleStatements(roleID) {
		res := st["Resource"]
		if _, many := res.([]any); !many {
			res = []any{res}
		}
		cond := ""
		if c, ok := st["Condition"]; ok {
			cond = " " + regionalService.ReplaceAllString(js(c), `"$1"`)
		}
		for _, a := range asStrings(st["Action"]) {
			if !slices.ContainsFunc([]string{"dynamodb:", "s3:", "events:", "kms:", "sqs:", "secretsmanager:"}, func(p string) bool { return strings.HasPrefix(a, p) }) {
				continue
			}
			for _, r := range res.([]any) {
				out = append(out, a+" "+name(r)+cond)
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestFunctionRolesLeastPrivilege: each pipeline function's role holds
// exactly what its code calls (functionAccess): no DeleteItem, Scan or
// batch writes, object actions on its prefixes only, listing only where S3
// must answer 404, and the key only through the services that use it on
// the function's behalf.
func TestFunctionRolesLeastPrivilege(t *testing.T) {
	via := func(svc string) string { return ` {"StringEquals":{"kms:ViaService":"` + svc + `"}}` }
	lambdaKey := "kms:Decrypt key" + via("lambda")
	dynamoKey := []string{"kms:Decrypt key" + via("dynamodb"), "kms:DescribeKey key" + via("dynamodb"), "kms:Encrypt key" + via("dynamodb"), "kms:GenerateDataKey* key" + via("dynamodb")}
	indexRW := []string{"dynamodb:GetItem index", "dynamodb:PutItem index", "dynamodb:Query index", "dynamodb:UpdateItem index"}
	// The bus uses the key as EventBridge, not with the caller's credentials.
	events := []string{"events:PutEvents bus"}
	// The work queue, polled by the event source mapping with the role.
	consume := []string{"sqs:DeleteMessage queue", "sqs:GetQueueAttributes queue", "sqs:ReceiveMessage queue", "kms:Decrypt key" + via("sqs")}
	// A scheduled function's failed runs, sent by Lambda with the role
	// (TestScheduledFunctions).
	failedRuns := []string{"sqs:SendMessage scheduleDlq", "kms:Decrypt key" + via("sqs"), "kms:GenerateDataKey key" + via("sqs")}
	// Every pipeline function reads the log-name key, under the stack's
	// key (newFunction): its lines name objects and studies as the SCP's
	// do. The audit feed names neither.
	logNameKey := []string{"secretsmanager:GetSecretValue logNameKey", "kms:Decrypt key" + via("secretsmanager")}
	for _, tc := range []struct {
		fn   string
		want [][]string
	}{
		{FnValidate, [][]string{consume, indexRW, {"dynamodb:PutItem audit"}, events, dynamoKey, {lambdaKey}, logNameKey,
			{"s3:GetObject bucket/incoming/*", "s3:GetObjectTagging bucket/incoming/*", "kms:Decrypt key" + via("s3")},
			// ListBucket: the object indexed under an instance, read to
			// compare contents, may be gone (sameContent: not the same
			// content), which S3 says with a 404 only to a caller that may list.
			{"s3:ListBucket bucket"},
			// Tags only where it copies (incoming/ to quarantine/): its
			// PUTs to metadata/ set none.
			{"s3:PutObject bucket/metadata/*", "s3:PutObject bucket/quarantine/*", "s3:PutObjectTagging bucket/quarantine/*", "kms:GenerateDataKey key" + via("s3")}}},
		// audit reads the content as indexed (Instances) and notes the
		// resend in its study (NoteSent); for a resend of a quarantined
		// object, that object's rejected record (bySop), which names its
		// copy: no read of quarantine/.
		{FnAudit, [][]string{consume, {"dynamodb:GetItem index", "dynamodb:Query index", "dynamodb:UpdateItem index"}, {"dynamodb:PutItem audit", "dynamodb:Query audit/index/bySop"}, dynamoKey, {lambdaKey}, logNameKey,
			// ListBucket: the incoming object a resend duplicates may be
			// gone, which S3 says with a 404 only to a caller that may list.
			{"s3:GetObject bucket/audit/*", "s3:GetObject bucket/incoming/*", "s3:ListBucket bucket", "kms:Decrypt key" + via("s3")}}},
		// notify and commitment name the study an announcement failed or
		// panicked for (before 2026-12-07 they had no key: names drawn per
		// execution environment, which nobody could look up).
		{FnNotify, [][]string{indexRW, {"dynamodb:Query index/index/byPending"}, events, dynamoKey, {lambdaKey}, logNameKey, failedRuns}},
		{FnCommitment, [][]string{consume, failedRuns, indexRW, {"dynamodb:Query index/index/byPending"}, {"dynamodb:PutItem audit", "dynamodb:Query audit/index/bySop"}, events, dynamoKey, {lambdaKey}, logNameKey,
			{"s3:GetObject bucket/commitment/requests/*", "s3:GetObject bucket/incoming/*", "s3:GetObject bucket/commitment/results/*", "s3:PutObject bucket/commitment/results/*", "s3:ListBucket bucket"},
			{"kms:Decrypt key" + via("s3"), "kms:GenerateDataKey key" + via("s3")}}},
		// The audit table's stream, read by the event source mapping, and
		// the on-failure queue, sent to by Lambda, both with the role.
		{FnAuditFeed, [][]string{{lambdaKey}, {"secretsmanager:GetSecretValue caSecret"}, {"dynamodb:ListStreams \"*\""},
			{"dynamodb:DescribeStream audit", "dynamodb:GetRecords audit", "dynamodb:GetShardIterator audit", "kms:Decrypt key" + via("dynamodb")},
			{"sqs:SendMessage onFailureDlq", "kms:Decrypt key" + via("sqs"), "kms:GenerateDataKey key" + via("sqs")}}},
	} {
		forEachEnv(t, func(t *testing.T, s *synthesized) {
			if tc.fn == FnAuditFeed && s.cfg.Audit.Syslog == nil {
				// Without audit.syslog (dev) there is no audit feed, so no
				// role to check: TestAuditFeed holds that there is none.
				return
			}
			t.Run(tc.fn, func(t *testing.T) {
				fn := s.stack.Pipeline.Functions[tc.fn]
				if tc.fn == FnAuditFeed {
					if s.stack.Pipeline.AuditFeed == nil {
						t.Fatal("audit.syslog set, but no audit feed (TestAuditFeed)")
					}
					fn = s.stack.Pipeline.AuditFeed.Function
				}
				role := refID(props(s.res[s.stack.logicalID(fn)])["Role"])
				got := s.grants(t, role)
				want := slices.Sorted(slices.Values(slices.Concat(tc.want...)))
				if d := cmp.Diff(want, got); d != "" {
					t.Errorf("%s role (-want +got):\n%s", tc.fn, d)
				}
				for _, g := range got {
					action, _, _ := strings.Cut(g, " ")
					switch {
					case slices.Contains([]string{"dynamodb:DeleteItem", "dynamodb:Scan", "dynamodb:BatchWriteItem", "dynamodb:UpdateItem audit"}, action):
						t.Errorf("%s may %s", tc.fn, g)
					case strings.HasPrefix(action, "kms:") && !strings.Contains(g, "kms:ViaService"):
						t.Errorf("%s may use the key directly: %s", tc.fn, g)
					case strings.HasPrefix(action, "s3:List") && (!functionAccess[tc.fn].ListBucket || action != "s3:ListBucket"):
						t.Errorf("%s may list the bucket: %s", tc.fn, g)
					}
				}
			})
		})
	}
}

// TestFunctionRolesAreTheirGrants: each declared function's role allows,
// in DynamoDB, S3 and EventBridge, exactly its grants in infra/access
// (access.Function.Grants, by which the emulated chain's grants check
// allows each call): no more, no less, no grant twice, each action on the
// ARN of what the grant names (the table, the table's index, the objects
// under the prefix, "prefix*", the bucket, the bus). The role's other
// statements (its queues, the key through services, the log-name key) are
// not infra/access's: TestFunctionRolesLeastPrivilege holds them.
func TestFunctionRolesAreTheirGrants(t *testing.T) {
	services := []string{"dynamodb:", "s3:", "events:"}
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		p := s.stack.Pipeline
		arn := func(c constructs.IConstruct) string { return `{"Fn::GetAtt":["` + s.stack.logicalID(c) + `","Arn"]}` }
		under := func(c constructs.IConstruct, suffix string) string {
			return `{"Fn::Join":["",[` + arn(c) + `,"` + suffix + `"]]}`
		}
		tables := map[string]constructs.IConstruct{access.IndexTable: p.IndexTable, access.AuditTable: p.AuditTable}
		// want is a grant as the template must hold it: its action on its
		// resource's ARN.
		want := func(g access.Grant) string {
			r := g.Resource
			res := map[access.ResourceKind]func() string{
				access.KindTable:      func() string { return arn(tables[r.Table]) },
				access.KindTableIndex: func() string { return under(tables[r.Table], "/index/"+r.Index) },
				access.KindObjects:    func() string { return under(s.stack.Storage.Bucket, "/"+r.Prefix+"*") },
				access.KindBucket:     func() string { return arn(s.stack.Storage.Bucket) },
				access.KindBus:        func() string { return arn(p.Bus) },
			}[r.Kind]
			if res == nil {
				t.Fatalf("grant %s: a resource this test does not know", g)
			}
			return g.Action + " " + res()
		}
		for _, name := range slices.Sorted(maps.Keys(access.Functions)) {
			t.Run(name, func(t *testing.T) {
				fn, ok := p.Functions[name]
				if !ok {
					t.Fatalf("%s is declared in infra/access but not deployed", name)
				}
				var wants []string
				for _, g := range access.Functions[name].Grants() {
					wants = append(wants, want(g))
				}
				var got []string
				for _, st := range s.roleStatements(refID(props(s.res[s.stack.logicalID(fn)])["Role"])) {
					res := asAnySlice(st["Resource"])
					if res == nil {
						res = []any{st["Resource"]}
					}
					for _, a := range asStrings(st["Action"]) {
						if !slices.ContainsFunc(services, func(p string) bool { return strings.HasPrefix(a, p) }) {
							continue
						}
						if _, ok := st["Condition"]; ok {
							t.Errorf("%s %s under a condition, which its grants do not have: %s", a, js(res), js(st["Condition"]))
						}
						for _, r := range res {
							got = append(got, a+" "+js(r))
						}
					}
				}
				slices.Sort(wants)
				slices.Sort(got)
				if d := cmp.Diff(wants, got); d != "" {
					t.Errorf("%s role against its grants (-grants +role):\n%s", name, d)
				}
			})
		}
	})
}

// TestEnvironmentsDecryptable: a function whose environment is encrypted
// with a key (KmsKeyArn) starts only if its role may decrypt with that key
// through Lambda, which decrypts the environment with the role's
// credentials; without it every cold start fails (KMSAccessDeniedException).
func TestEnvironmentsDecryptable(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		n := 0
		for id, f := range s.resources("AWS::Lambda::Function") {
			key := refID(props(f)["KmsKeyArn"])
			if key == "" {
				continue
			}
			n++
			ok := false
			for _, st := range s.roleStatements(refID(props(f)["Role"])) {
				if slices.Contains(asStrings(st["Action"]), "kms:Decrypt") && refID(st["Resource"]) == key &&
					regionalService.ReplaceAllString(js(st["Condition"]), `"$1"`) == `{"StringEquals":{"kms:ViaService":"lambda"}}` {
					ok = true
				}
			}
			if !ok {
				t.Errorf("%s: its environment is under %s, which its role may not decrypt through Lambda", id, key)
			}
		}
		if want := len(FunctionNames) + feeds(s); n != want {
			t.Errorf("%d functions with an encrypted environment, want %d", n, want)
		}
	})
}

// TestServicesConfinedToTheAccount: every resource policy statement that
// lets an AWS service in (the queues', the alarm topic's, the key's)
// carries aws:SourceAccount or, for CloudWatch Logs, the log groups' ARN
// in the encryption context, and for EventBridge's use of the alarm
// topic's key (whose KMS calls carry no aws:SourceAccount) this account's
// topics in it, against the confused deputy; where the queues' sender is
// known, also its ARN.
func TestServicesConfinedToTheAccount(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		for typ, doc := range map[string]string{"AWS::SQS::QueuePolicy": "PolicyDocument", "AWS::SNS::TopicPolicy": "PolicyDocument", "AWS::KMS::Key": "KeyPolicy"} {
			for id, r := range s.resources(typ) {
				for _, st := range props(r)[doc].(map[string]any)["Statement"].([]any) {
					st := st.(map[string]any)
					principal, _ := st["Principal"].(map[string]any)
					svc, _ := principal["Service"].(string)
					if st["Effect"] != "Allow" || svc == "" {
						continue
					}
					cond := js(st["Condition"])
					switch {
					case strings.HasPrefix(svc, "logs."):
						if !strings.Contains(cond, "kms:EncryptionContext:aws:logs:arn") {
							t.Errorf("%s: %s without the log groups' encryption context: %s", id, svc, cond)
						}
					case svc == "events.amazonaws.com" && typ == "AWS::KMS::Key" &&
						strings.Contains(cond, `{"StringLike":{"kms:EncryptionContext:aws:sns:topicArn":{"Fn::Join":["",["arn:",{"Ref":"AWS::Partition"},":sns:",{"Ref":"AWS::Region"},":",{"Ref":"AWS::AccountId"},":*"]]}}}`):
						// EventBridge to encrypted topics: SNS's KMS calls
						// for it name no source (TestBackupFailuresAlert).
					case exactRuleSource(s, st):
						// CDK's statement for a schedule rule's dead-letter
						// queue: the rule's own ARN, which names the account.
					case !strings.Contains(cond, `"aws:SourceAccount"`):
						t.Errorf("%s: %s without aws:SourceAccount: %s", id, svc, cond)
					}
					if typ == "AWS::SQS::QueuePolicy" && !strings.Contains(cond, `"aws:SourceArn"`) {
						t.Errorf("%s: %s without aws:SourceArn: %s", id, svc, cond)
					}
				}
			}
		}
	})
}

// TestRoleTrustConfinedToTheAccount: a role a service assumes on the
// account's behalf, where the service's guide documents it against the
// confused deputy, trusts the service only for this account's resources
// (aws:SourceAccount, and aws:SourceArn of the resources of the kind it
// acts for). The flow logs' role trusted vpc-flow-logs.amazonaws.com for
// any account's flow log ("IAM role for publishing flow logs to
// CloudWatch Logs", Amazon VPC User Guide, recommends both keys), and the
// scp-task's task role ecs-tasks.amazonaws.com for any account's task
// ("Amazon ECS task IAM role", Amazon ECS Developer Guide: both keys, the
// ARN arn:aws:ecs:<region>:<account>:*).
func TestRoleTrustConfinedToTheAccount(t *testing.T) {
	cases := []struct {
		service string
		source  string // the resource kind in aws:SourceArn
		// role, if set, is the one role of the service the guide
		// documents the keys for (TestRoleTrustAsDocumented holds the
		// others).
		role func(s *synthesized) string
	}{
		{service: "vpc-flow-logs.amazonaws.com", source: `":ec2:",{"Ref":"AWS::Region"},":",{"Ref":"AWS::AccountId"},":vpc-flow-log/*"`},
		{service: "ecs-tasks.amazonaws.com", source: `":ecs:",{"Ref":"AWS::Region"},":",{"Ref":"AWS::AccountId"},":*"`,
			role: func(s *synthesized) string { return s.stack.logicalID(s.stack.Ingest.TaskRole) }},
	}
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		for _, tc := range cases {
			t.Run(tc.service, func(t *testing.T) {
				n := 0
				for id, st := range trustStatements(s, tc.service) {
					if tc.role != nil && id != tc.role(s) {
						continue
					}
					n++
					cond := js(st["Condition"])
					if !strings.Contains(cond, `{"aws:SourceAccount":{"Ref":"AWS::AccountId"}}`) || !strings.Contains(cond, `"ArnLike":{"aws:SourceArn":`) || !strings.Contains(cond, tc.source) {
						t.Errorf("%s trusts %s without this account's aws:SourceAccount and aws:SourceArn (%s): %s", id, tc.service, tc.source, cond)
					}
				}
				if n == 0 {
					t.Errorf("no role trusts %s", tc.service)
				}
			})
		}
	})
}

// TestRoleTrustAsDocumented: the roles whose service documents no
// confused-deputy condition for its role's trust policy trust it without
// one: a condition on a key the service does not set when it assumes the
// role refuses it every time (a task that never starts, a backup that never
// runs), and no account here can try it. The task execution role: the
// "Amazon ECS task execution IAM role" page's trust policy has none (the
// task role's page has them, TestRoleTrustConfinedToTheAccount); AWS
// Backup's selection roles: its "Cross-service confused deputy
// prevention" page names aws:SourceArn only for its SNS notifications
// (a vault) and its KMS calls as backup-storage.amazonaws.com, none for
// backup.amazonaws.com assuming a role. docs/operations/deploy.md lists
// both as by design.
func TestRoleTrustAsDocumented(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		exec := s.stack.logicalID(s.stack.Ingest.TaskDefinition.ExecutionRole())
		for _, tc := range []struct {
			service string
			want    func(id string) bool // the roles expected to trust it plainly
			least   int
		}{
			{"ecs-tasks.amazonaws.com", func(id string) bool { return id == exec }, 1},
			{"backup.amazonaws.com", func(string) bool { return true }, 1},
		} {
			n := 0
			for id, st := range trustStatements(s, tc.service) {
				if !tc.want(id) {
					continue
				}
				n++
				if c, ok := st["Condition"]; ok {
					t.Errorf("%s trusts %s with a condition its service documents for no such role: %s", id, tc.service, js(c))
				}
			}
			if n < tc.least {
				t.Errorf("%d roles trust %s plainly, want at least %d", n, tc.service, tc.least)
			}
		}
	})
}

// trustStatements are the statements of the roles' trust policies that let
// service assume them, by role.
func trustStatements(s *synthesized, service string) iter.Seq2[string, map[string]any] {
	return func(yield func(string, map[string]any) bool) {
		for id, r := range s.resources("AWS::IAM::Role") {
			for _, st := range props(r)["AssumeRolePolicyDocument"].(map[string]any)["Statement"].([]any) {
				st := st.(map[string]any)
				if principal, _ := st["Principal"].(map[string]any); principal["Service"] != service {
					continue
				}
				if !yield(id, st) {
					return
				}
			}
		}
	}
}

// exactRuleSource reports whether a statement's only source condition is
// the exact ARN of one of the stack's rules (an ARN holding the account,
// so it confines the service to this account as aws:SourceAccount would).
func exactRuleSource(s *synthesized, st map[string]any) bool {
	c, _ := st["Condition"].(map[string]any)
	eq, _ := c["ArnEquals"].(map[string]any)
	r, ok := s.res[refID(eq["aws:SourceArn"])]
	return ok && len(c) == 1 && r["Type"] == "AWS::Events::Rule"
}

// TestKeyOnlyThroughServices: no role anywhere in the stack may use the
// key directly; every KMS statement names the service that uses the key
// on the role's behalf.
func TestKeyOnlyThroughServices(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		for id, pol := range s.resources("AWS::IAM::Policy") {
			for _, st := range props(pol)["PolicyDocument"].(map[string]any)["Statement"].([]any) {
				st := st.(map[string]any)
				if strings.Contains(js(st["Action"]), `"kms:`) && !strings.Contains(js(st["Condition"]), `"kms:ViaService"`) {
					t.Errorf("%s: %s without kms:ViaService", id, js(st))
				}
			}
		}
	})
}

// TestBackupVaultLock: the vault is locked as the config asks and only
// then, in governance mode unless changeableForDays is set: dev not at
// all, prod (patient data) in governance mode for its daily backups' 35
// days, which every recovery point the plans make in the vault is kept at
// least (the lock fails a job kept less; a rule that deletes nothing keeps
// them forever, keptDays).
func TestBackupVaultLock(t *testing.T) {
	want := map[string]string{"dev": "", "prod": `{"MinRetentionDays":35}`}
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		for id, v := range s.resources("AWS::Backup::BackupVault") {
			got := ""
			if lc, ok := props(v)["LockConfiguration"]; ok {
				got = js(lc)
			}
			if got != want[s.cfg.Name] {
				t.Errorf("%s: lock %q, want %q (pipeline.backupVaultLock %+v)", id, got, want[s.cfg.Name], s.cfg.Pipeline.BackupVaultLock)
			}
		}
		if l := s.cfg.Pipeline.BackupVaultLock; l != nil {
			// Every plan's rule keeps its recovery points at least the
			// lock's minimum, or AWS Backup fails its jobs.
			rules := 0
			for id, p := range s.resources("AWS::Backup::BackupPlan") {
				for _, r := range asAnySlice(props(p)["BackupPlan"].(map[string]any)["BackupPlanRule"]) {
					rules++
					if days, forever := keptDays(r.(map[string]any)); !forever && days < l.MinRetentionDays {
						t.Errorf("%s: rule %v keeps its recovery points %d days, under the lock's %d", id, r.(map[string]any)["RuleName"], days, l.MinRetentionDays)
					}
				}
			}
			if rules < 2 {
				t.Errorf("%d backup rules, want the daily and the audit table's monthly", rules)
			}
		}
	})
	if testing.Short() {
		t.Skip("one more synthesis; skipped with -short")
	}
	s := synthEnv(t, "vaultlock", variant("dev", "vaultlock", func(c *config.Config) {
		c.Pipeline.BackupVaultLock = &config.BackupVaultLock{MinRetentionDays: 7, ChangeableForDays: new(3)}
	}))
	v := props(first(s.resources("AWS::Backup::BackupVault")))
	if got := js(v["LockConfiguration"]); got != `{"ChangeableForDays":3,"MinRetentionDays":7}` {
		t.Errorf("vault lock %s", got)
	}
	if refID(v["EncryptionKeyArn"]) != s.stack.logicalID(s.stack.Storage.BackupKey) {
		t.Errorf("vault key %s, want the backup key", js(v["EncryptionKeyArn"]))
	}
}

// keptDays is how long a backup plan rule (its template properties) keeps
// its recovery points: DeleteAfterDays, or forever when its lifecycle
// deletes nothing (no Lifecycle, or one without DeleteAfterDays), which
// any vault lock's minimum allows.
func keptDays(rule map[string]any) (days int, forever bool) {
	lc, _ := rule["Lifecycle"].(map[string]any)
	d, ok := lc["DeleteAfterDays"].(float64)
	if !ok {
		return 0, true
	}
	return int(d), false
}

func TestKeptDays(t *testing.T) {
	for _, tc := range []struct {
		name    string
		rule    string
		days    int
		forever bool
	}{
		{"deleted after 35 days", `{"Lifecycle":{"DeleteAfterDays":35}}`, 35, false},
		{"moved to cold storage, then deleted", `{"Lifecycle":{"MoveToColdStorageAfterDays":30,"DeleteAfterDays":365}}`, 365, false},
		{"no lifecycle", `{"RuleName":"Daily"}`, 0, true},
		{"a lifecycle that deletes nothing", `{"Lifecycle":{"MoveToColdStorageAfterDays":30}}`, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rule map[string]any
			if err := json.Unmarshal([]byte(tc.rule), &rule); err != nil {
				t.Fatal(err)
			}
			if days, forever := keptDays(rule); days != tc.days || forever != tc.forever {
				t.Errorf("keptDays(%s) = %d, %v; want %d, %v", tc.rule, days, forever, tc.days, tc.forever)
			}
		})
	}
}

// TestKeysAdministrableByTheAccount: every key's policy lets the account
// (its root, so IAM decides who) administer the key, with no condition:
// without such a statement a key whose other principals are gone can be
// managed by no one ("Default key policy", AWS KMS Developer Guide).
// The keys but the backup vault's keep CDK's default statement, the
// account's kms:* (docs/operations/deploy.md, by design); the vault's key
// has its administration without disabling or deleting it
// (TestBackupVaultUnderItsOwnKey).
func TestKeysAdministrableByTheAccount(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		root := js(map[string]any{"AWS": map[string]any{"Fn::Join": []any{"", []any{"arn:", map[string]any{"Ref": "AWS::Partition"}, ":iam::" + s.cfg.Account + ":root"}}}})
		backupKey := s.stack.logicalID(s.stack.Storage.BackupKey)
		keys := 0
		for id, k := range s.resources("AWS::KMS::Key") {
			keys++
			admin, all := false, false
			for _, st := range asAnySlice(props(k)["KeyPolicy"].(map[string]any)["Statement"]) {
				st := st.(map[string]any)
				if st["Effect"] != "Allow" || js(st["Principal"]) != root || st["Condition"] != nil {
					continue
				}
				actions := js(st["Action"])
				all = all || actions == `"kms:*"`
				admin = admin || all || strings.Contains(actions, `"kms:PutKeyPolicy"`)
			}
			switch {
			case !admin:
				t.Errorf("key %s: no statement lets the account administer it (kms:PutKeyPolicy): it could become unmanageable", id)
			case id != backupKey && !all:
				t.Errorf("key %s: the account's kms:* statement (CDK's default) is gone", id)
			case id == backupKey && all:
				t.Errorf("the backup vault's key %s lets the account kms:*", id)
			}
		}
		if keys != 4 {
			t.Errorf("%d keys, want the stack's, the backup vault's, the bus dead-letter queue's and the alarm topic's", keys)
		}
	})
}

// TestKeyPolicyServiceStatements: the key policy lets CloudWatch Logs and
// CloudWatch alarms use the key only as they need it: Logs for this
// account's log groups in this Region (the encryption context), with each
// action named where one is meant; alarms only for this account's alarms
// (aws:SourceAccount, aws:SourceArn) publishing to this account's topics
// (the SNS encryption context). Neither statement names the account or
// Region by a literal: both come from the deployment, as every other
// statement's do.
func TestKeyPolicyServiceStatements(t *testing.T) {
	regional := func(service, resource string) string {
		return `{"Fn::Join":["",["arn:",{"Ref":"AWS::Partition"},":` + service + `:",{"Ref":"AWS::Region"},":",{"Ref":"AWS::AccountId"},":` + resource + `"]]}`
	}
	stackKey := func(s *IngestStack) awskms.Key { return s.Storage.Key }
	cases := []struct {
		sid, principal string
		key            func(*IngestStack) awskms.Key // whose policy holds it
		actions        []string
		condition      string
	}{
		{sid: "CloudWatchLogs", principal: "logs.%s.amazonaws.com", key: stackKey,
			actions:   []string{"kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"},
			condition: `{"ArnLike":{"kms:EncryptionContext:aws:logs:arn":` + regional("logs", "log-group:*") + `}}`},
		// The alarm topic's own key: alarms reach the on-call engineer
		// whatever befell the stack's key (TestAlarmTopicOutlivesTheStacksKey).
		{sid: "CloudWatchAlarms", principal: "cloudwatch.amazonaws.com", key: func(s *IngestStack) awskms.Key { return s.Observability.TopicKey },
			actions: []string{"kms:Decrypt", "kms:GenerateDataKey*"},
			condition: `{"ArnLike":{"aws:SourceArn":[` + regional("cloudwatch", "alarm:*") + `]},` +
				`"StringEquals":{"aws:SourceAccount":{"Ref":"AWS::AccountId"}},` +
				`"StringLike":{"kms:EncryptionContext:aws:sns:topicArn":` + regional("sns", "*") + `}}`},
	}
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		for _, tc := range cases {
			t.Run(tc.sid, func(t *testing.T) {
				var st map[string]any
				for _, x := range props(s.res[s.stack.logicalID(tc.key(s.stack))])["KeyPolicy"].(map[string]any)["Statement"].([]any) {
					if m := x.(map[string]any); m["Sid"] == tc.sid {
						st = m
					}
				}
				if st == nil {
					t.Fatalf("no statement %s in the key policy", tc.sid)
				}
				if got, want := js(st["Principal"]), `{"Service":"`+strings.ReplaceAll(tc.principal, "%s", s.cfg.Region)+`"}`; got != want {
					t.Errorf("principal %s, want %s", got, want)
				}
				if d := cmp.Diff(tc.actions, slices.Sorted(slices.Values(asStrings(st["Action"])))); d != "" {
					t.Errorf("actions (-want +got):\n%s", d)
				}
				if got := js(st["Condition"]); got != tc.condition {
					t.Errorf("condition\n got %s\nwant %s", got, tc.condition)
				}
				if strings.Contains(js(st), s.cfg.Account) {
					t.Errorf("statement names the account %s literally: %s", s.cfg.Account, js(st))
				}
			})
		}
	})
}

// TestAlarmTopicOutlivesTheStacksKey: the alarm topic is under a key of its
// own, which encrypts nothing else, and the stack's key lets no service use
// it for a topic. Under the stack's key, a failure of that key (disabled,
// pending deletion, its policy changed), which fails the SCP's writes, the
// functions and the bus, kept every alarm from reaching anyone: SNS needs a
// data key under the topic's key for each message, BusDlqNotEmpty's
// included, whose queue has a key of its own for exactly that failure
// (found by the operator drill).
func TestAlarmTopicOutlivesTheStacksKey(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		stackKey := s.stack.logicalID(s.stack.Storage.Key)
		topics := s.resources("AWS::SNS::Topic")
		if len(topics) != 1 {
			t.Fatalf("%d topics, want the alarm topic alone", len(topics))
		}
		var topicKey string
		for id, tp := range topics {
			topicKey = refID(props(tp)["KmsMasterKeyId"])
			if topicKey == "" || topicKey == stackKey || s.res[topicKey]["Type"] != "AWS::KMS::Key" {
				t.Errorf("topic %s is under %s, want a key of its own (the stack's is %s)", id, js(props(tp)["KmsMasterKeyId"]), stackKey)
			}
		}
		// Nothing else is under the topic's key.
		for id, r := range s.res {
			if id == topicKey || r["Type"] == "AWS::SNS::Topic" {
				continue
			}
			if p := js(props(r)); strings.Contains(p, `"Ref":"`+topicKey+`"`) || strings.Contains(p, `["`+topicKey+`","Arn"]`) {
				if r["Type"] != "AWS::CloudFormation::Output" && !strings.HasPrefix(r["Type"].(string), "AWS::IAM::") {
					t.Errorf("%s (%s) uses the alarm topic's key", id, r["Type"])
				}
			}
		}
		for _, st := range props(s.res[stackKey])["KeyPolicy"].(map[string]any)["Statement"].([]any) {
			if strings.Contains(js(st), "aws:sns:topicArn") {
				t.Errorf("the stack's key lets a service use it for topics: %s", js(st))
			}
		}
		if _, ok := s.outputs["AlarmTopicKeyArn"]; !ok {
			t.Error("no output AlarmTopicKeyArn")
		}
	})
}

// callers names, for each IAM action a role of the stack may hold, who
// calls it: the functions' and scp-task's code (SDK calls), or the AWS
// service that calls it with the role's credentials, as its documentation
// lists. An action nothing calls is a grant to remove, not a row to add.
// The queue actions (sqsConsume, sqsSend) and the key (keyVia) are checked
// against their resources instead.
var callers = map[string]string{
	"dynamodb:GetItem":                  "shared/awsadapters (the index, published marks)",
	"dynamodb:PutItem":                  "shared/awsadapters (audit records, the index, published marks)",
	"dynamodb:UpdateItem":               "shared/awsadapters (UpsertInstance, MarkAnnounced, DeferAnnouncement)",
	"dynamodb:Query":                    "shared/awsadapters (a study's partition, byPending, bySop)",
	"dynamodb:DescribeStream":           "Lambda's stream event source mapping (the audit feed)",
	"dynamodb:GetRecords":               "Lambda's stream event source mapping (the audit feed)",
	"dynamodb:GetShardIterator":         "Lambda's stream event source mapping (the audit feed)",
	"dynamodb:ListStreams":              "Lambda's stream event source mapping (the audit feed)",
	"s3:GetObject":                      "the functions' GETs and HEADs; scp-task's HEAD of what it wrote",
	"s3:GetObjectTagging":               "validate's quarantine CopyObject (copies the source's tags)",
	"s3:PutObject":                      "the functions' and scp-task's uploads",
	"s3:PutObjectTagging":               "validate's quarantine CopyObject",
	"s3:AbortMultipartUpload":           "scp-task (an upload cut short)",
	"s3:ListBucket":                     "scp-task's HeadBucket (readiness); 404 rather than 403 for a missing object",
	"s3:ListBucketMultipartUploads":     "scp-task (unfinished uploads at start)",
	"s3:PutBucketNotification":          "CDK's bucket notifications custom resource",
	"events:PutEvents":                  "shared/awsadapters (EventBridge publisher)",
	"secretsmanager:GetSecretValue":     "lambdaio (the log-name key), auditfeed (its certificates), ECS (the task's secrets)",
	"ecr:GetAuthorizationToken":         "ECS pulling the task's images (execution role)",
	"ecr:BatchCheckLayerAvailability":   "ECS pulling the task's images (execution role)",
	"ecr:BatchGetImage":                 "ECS pulling the task's images (execution role)",
	"ecr:GetDownloadUrlForLayer":        "ECS pulling the task's images (execution role)",
	"logs:CreateLogStream":              "the awslogs driver, the metrics agent, VPC flow logs",
	"logs:PutLogEvents":                 "the awslogs driver, the metrics agent, VPC flow logs",
	"logs:DescribeLogStreams":           "VPC flow logs (CDK's FlowLog role)",
	"elasticfilesystem:ClientMount":     "the staging file system's mount (IAM authorization)",
	"elasticfilesystem:ClientWrite":     "the staging file system's mount (IAM authorization)",
	"ecs:UpdateTaskProtection":          "scp-task's scale-in protection (ECS agent endpoint)",
	"ec2:DescribeManagedPrefixLists":    "CDK's prefix list look-up custom resource",
	"ec2:AuthorizeSecurityGroupIngress": "CDK's default security group restriction",
	"ec2:AuthorizeSecurityGroupEgress":  "CDK's default security group restriction",
	"ec2:RevokeSecurityGroupIngress":    "CDK's default security group restriction",
	"ec2:RevokeSecurityGroupEgress":     "CDK's default security group restriction",
}

// sqsConsume are what an SQS event source mapping calls with the
// function's role ("Execution role permissions", Using Lambda with Amazon
// SQS, AWS Lambda Developer Guide), and sqsSend what Lambda calls to send a
// failed batch or invocation to an SQS on-failure destination (Using AWS
// Lambda with Amazon DynamoDB; Asynchronous invocation): SendMessage alone.
var (
	sqsConsume = []string{"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}
	sqsSend    = []string{"sqs:SendMessage"}
)

// keyViaServices lists the services that use the stack's key with a role's
// credentials (kms:ViaService): EventBridge is not among them, its bus and
// archive use the key as events.amazonaws.com, under the key policy
// ("Authorizing EventBridge to use a customer managed key").
var keyViaServices = []string{"dynamodb", "lambda", "s3", "secretsmanager", "sqs"}

// TestNoGrantWithoutACaller: every action of every role in the stack has a
// caller (callers); the queue actions only on the queues the role's
// function polls or sends its failures to; the key only through a service
// that uses it with the role's credentials. CDK's helper grants add
// actions nothing calls (GrantRead's secretsmanager:DescribeSecret,
// grantConsumeMessages' ChangeMessageVisibility and GetQueueUrl,
// grantSendMessages' GetQueueAttributes and GetQueueUrl), which this
// catches wherever one comes back.
func TestNoGrantWithoutACaller(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		// The queues each role's function polls and sends failures to.
		polls, sends := map[string][]string{}, map[string][]string{}
		roleOf := func(fn any) string { return refID(props(s.res[refID(fn)])["Role"]) }
		for _, m := range s.resources("AWS::Lambda::EventSourceMapping") {
			p := props(m)
			if src := refID(p["EventSourceArn"]); s.res[src]["Type"] == "AWS::SQS::Queue" {
				polls[roleOf(p["FunctionName"])] = append(polls[roleOf(p["FunctionName"])], src)
			}
			if d, ok := p["DestinationConfig"].(map[string]any); ok {
				q := refID(d["OnFailure"].(map[string]any)["Destination"])
				sends[roleOf(p["FunctionName"])] = append(sends[roleOf(p["FunctionName"])], q)
			}
		}
		for _, c := range s.resources("AWS::Lambda::EventInvokeConfig") {
			p := props(c)
			q := refID(p["DestinationConfig"].(map[string]any)["OnFailure"].(map[string]any)["Destination"])
			sends[roleOf(p["FunctionName"])] = append(sends[roleOf(p["FunctionName"])], q)
		}
		statements := map[string][]map[string]any{} // by role
		for _, pol := range s.resources("AWS::IAM::Policy") {
			for _, r := range props(pol)["Roles"].([]any) {
				for _, st := range props(pol)["PolicyDocument"].(map[string]any)["Statement"].([]any) {
					statements[refID(r)] = append(statements[refID(r)], st.(map[string]any))
				}
			}
		}
		for id, role := range s.resources("AWS::IAM::Role") {
			for _, pol := range asAnySlice(props(role)["Policies"]) {
				for _, st := range pol.(map[string]any)["PolicyDocument"].(map[string]any)["Statement"].([]any) {
					statements[id] = append(statements[id], st.(map[string]any))
				}
			}
		}
		for role, sts := range statements {
			for _, st := range sts {
				if st["Effect"] != "Allow" {
					continue
				}
				res := asAnySlice(st["Resource"])
				if res == nil {
					res = []any{st["Resource"]}
				}
				for _, a := range asStrings(st["Action"]) {
					var queues []string
					switch {
					case slices.Contains(sqsConsume, a):
						queues = polls[role]
					case slices.Contains(sqsSend, a):
						queues = sends[role]
					case strings.HasPrefix(a, "kms:"):
						via := regionalService.ReplaceAllString(js(st["Condition"]), `"$1"`)
						if !slices.ContainsFunc(keyViaServices, func(svc string) bool {
							// "svc" (the stack's Region) or "svc.<region>.amazonaws.com" (a secret's own key, grantSecretKey)
							return strings.Contains(via, `"kms:ViaService":"`+svc+`"`) || strings.Contains(via, `"kms:ViaService":"`+svc+`.`)
						}) {
							t.Errorf("%s: %s %s: no service uses the key with this role's credentials", role, a, via)
						}
						continue
					case callers[a] != "":
						continue
					default:
						t.Errorf("%s: %s on %s: nothing calls it", role, a, js(res))
						continue
					}
					for _, r := range res {
						if !slices.Contains(queues, refID(r)) {
							t.Errorf("%s: %s on %s, which its function neither polls nor sends its failures to (%v, %v)", role, a, js(r), polls[role], sends[role])
						}
					}
				}
			}
		}
	})
}
