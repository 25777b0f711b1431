package stack

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/infra/config"
)

// roleStatements returns the Allow statements of the policies attached to
// a role (by its logical id).
func (s *synthesized) roleStatements(roleID string) []map[string]any {
	var out []map[string]any
	for _, pol := range s.resources("AWS::IAM::Policy") {
		if !slices.ContainsFunc(props(pol)["Roles"].([]any), func(r any) bool { return refID(r) == roleID }) {
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
// SQS, KMS) as "action resource[ condition]" lines, resources named by what
// they are (bucket, index, audit, bus, key) rather than logical ids.
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
	if p.AuditFeed != nil {
		names[s.stack.logicalID(p.AuditFeed.Dlq)] = "onFailureDlq"
	}
	name := func(r any) string {
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
			if !slices.ContainsFunc([]string{"dynamodb:", "s3:", "events:", "kms:", "sqs:"}, func(p string) bool { return strings.HasPrefix(a, p) }) {
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
	for _, tc := range []struct {
		fn   string
		want [][]string
	}{
		{FnValidate, [][]string{consume, indexRW, {"dynamodb:PutItem audit"}, events, dynamoKey, {lambdaKey},
			{"s3:GetObject bucket/incoming/*", "s3:GetObjectTagging bucket/incoming/*", "kms:Decrypt key" + via("s3")},
			{"s3:PutObject bucket/metadata/*", "s3:PutObject bucket/quarantine/*", "s3:PutObjectTagging bucket/metadata/*", "s3:PutObjectTagging bucket/quarantine/*", "kms:GenerateDataKey key" + via("s3")}}},
		{FnAudit, [][]string{consume, {"dynamodb:PutItem audit"}, dynamoKey, {lambdaKey},
			{"s3:GetObject bucket/audit/*", "kms:Decrypt key" + via("s3")}}},
		{FnNotify, [][]string{indexRW, {"dynamodb:Query index/index/byPending"}, events, dynamoKey, {lambdaKey}, failedRuns}},
		{FnCommitment, [][]string{consume, failedRuns, indexRW, {"dynamodb:Query index/index/byPending"}, {"dynamodb:PutItem audit", "dynamodb:Query audit/index/bySop"}, events, dynamoKey, {lambdaKey},
			{"s3:GetObject bucket/commitment/requests/*", "s3:GetObject bucket/incoming/*", "s3:GetObject bucket/commitment/results/*", "s3:PutObject bucket/commitment/results/*", "s3:ListBucket bucket"},
			{"kms:Decrypt key" + via("s3"), "kms:GenerateDataKey key" + via("s3")}}},
		// The audit table's stream, read by the event source mapping, and
		// the on-failure queue, sent to by Lambda, both with the role.
		{FnAuditFeed, [][]string{{lambdaKey}, {"dynamodb:ListStreams \"*\""},
			{"dynamodb:DescribeStream audit", "dynamodb:GetRecords audit", "dynamodb:GetShardIterator audit", "kms:Decrypt key" + via("dynamodb")},
			{"sqs:SendMessage onFailureDlq", "kms:Decrypt key" + via("sqs"), "kms:GenerateDataKey key" + via("sqs")}}},
	} {
		forEachEnv(t, func(t *testing.T, s *synthesized) {
			t.Run(tc.fn, func(t *testing.T) {
				fn := s.stack.Pipeline.Functions[tc.fn]
				if tc.fn == FnAuditFeed {
					if s.stack.Pipeline.AuditFeed == nil {
						t.Skip("no audit.syslog")
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
					case strings.HasPrefix(action, "s3:List") && (tc.fn != FnCommitment || action != "s3:ListBucket"):
						t.Errorf("%s may list the bucket: %s", tc.fn, g)
					}
				}
			})
		})
	}
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
// in the encryption context, against the confused deputy; where the
// queues' sender is known, also its ARN.
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

// TestBackupVaultLock: the vault is locked only where the config asks, in
// governance mode unless changeableForDays is set.
func TestBackupVaultLock(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		for id, v := range s.resources("AWS::Backup::BackupVault") {
			if lc, ok := props(v)["LockConfiguration"]; ok {
				t.Errorf("%s: locked without pipeline.backupVaultLock: %s", id, js(lc))
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
	cases := []struct {
		sid, principal string
		actions        []string
		condition      string
	}{
		{sid: "CloudWatchLogs", principal: "logs.%s.amazonaws.com",
			actions:   []string{"kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"},
			condition: `{"ArnLike":{"kms:EncryptionContext:aws:logs:arn":` + regional("logs", "log-group:*") + `}}`},
		{sid: "CloudWatchAlarms", principal: "cloudwatch.amazonaws.com",
			actions: []string{"kms:Decrypt", "kms:GenerateDataKey*"},
			condition: `{"ArnLike":{"aws:SourceArn":` + regional("cloudwatch", "alarm:*") + `},` +
				`"StringEquals":{"aws:SourceAccount":{"Ref":"AWS::AccountId"}},` +
				`"StringLike":{"kms:EncryptionContext:aws:sns:topicArn":` + regional("sns", "*") + `}}`},
	}
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		for _, tc := range cases {
			t.Run(tc.sid, func(t *testing.T) {
				var st map[string]any
				for _, x := range props(s.res[s.stack.logicalID(s.stack.Storage.Key)])["KeyPolicy"].(map[string]any)["Statement"].([]any) {
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
