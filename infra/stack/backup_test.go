package stack

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/infra/config"
)

// backupVault returns the logical id and the resource of the stack's one
// backup vault.
func (s *synthesized) backupVault(t *testing.T) (string, map[string]any) {
	t.Helper()
	vaults := s.resources("AWS::Backup::BackupVault")
	if len(vaults) != 1 {
		t.Fatalf("%d backup vaults, want 1", len(vaults))
	}
	for id, v := range vaults {
		return id, v
	}
	return "", nil
}

// plain renders a value through JSON, so that values built in a test
// compare equal to the template's.
func plain(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBackupVaultUnderItsOwnKey: the recovery points of the tables (and of
// the staging file system) are encrypted under a key of their own, not
// the one that encrypts the data they protect, so disabling, deleting or
// re-policying the data's key leaves them restorable. The vault was under
// the stack's one key.
func TestBackupVaultUnderItsOwnKey(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		vaultID, vault := s.backupVault(t)
		keyID := refID(props(vault)["EncryptionKeyArn"])
		dataKeyID := s.stack.logicalID(s.stack.Storage.Key)
		if keyID == "" || keyID == dataKeyID {
			t.Fatalf("vault %s is encrypted under %s, want a key of its own (the data's is %s)", vaultID, js(props(vault)["EncryptionKeyArn"]), dataKeyID)
		}
		if vault["DeletionPolicy"] != "Retain" || vault["UpdateReplacePolicy"] != "Retain" {
			t.Errorf("vault %s: deletion policy %v, update replace policy %v, want both Retain", vaultID, vault["DeletionPolicy"], vault["UpdateReplacePolicy"])
		}
		key := s.res[keyID]
		if key["Type"] != "AWS::KMS::Key" {
			t.Fatalf("the vault's key %s is a %v", keyID, key["Type"])
		}
		kp := props(key)
		if kp["EnableKeyRotation"] != true || kp["PendingWindowInDays"] != float64(30) {
			t.Errorf("vault key: rotation %v, deletion window %v days, want rotation and 30 days", kp["EnableKeyRotation"], kp["PendingWindowInDays"])
		}
		if key["DeletionPolicy"] != "Retain" || key["UpdateReplacePolicy"] != "Retain" {
			t.Errorf("vault key: deletion policy %v, update replace policy %v, want both Retain", key["DeletionPolicy"], key["UpdateReplacePolicy"])
		}

		// The key policy, statement by statement: the account administers
		// the key but cannot disable it or schedule its deletion without
		// first changing this policy, and uses it only through AWS Backup
		// in this Region (the grants AWS Backup creates for its jobs
		// included).
		acct := s.cfg.Account
		root := map[string]any{"AWS": map[string]any{"Fn::Join": []any{"", []any{"arn:", map[string]any{"Ref": "AWS::Partition"}, ":iam::" + acct + ":root"}}}}
		viaBackup := map[string]any{"Fn::Join": []any{"", []any{"backup.", map[string]any{"Ref": "AWS::Region"}, ".amazonaws.com"}}}
		want := plain(t, []any{
			map[string]any{
				"Sid": "KeyAdministration", "Effect": "Allow", "Principal": root, "Resource": "*",
				"Action": []string{
					"kms:CancelKeyDeletion", "kms:CreateAlias", "kms:DeleteAlias", "kms:DescribeKey",
					"kms:EnableKey", "kms:EnableKeyRotation", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus",
					"kms:ListGrants", "kms:ListKeyPolicies", "kms:ListKeyRotations", "kms:ListResourceTags",
					"kms:PutKeyPolicy", "kms:RevokeGrant", "kms:RotateKeyOnDemand", "kms:TagResource",
					"kms:UntagResource", "kms:UpdateAlias", "kms:UpdateKeyDescription",
				},
			},
			map[string]any{
				"Sid": "UseThroughBackup", "Effect": "Allow", "Principal": root, "Resource": "*",
				"Action":    []string{"kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*", "kms:RetireGrant"},
				"Condition": map[string]any{"StringEquals": map[string]any{"kms:CallerAccount": acct, "kms:ViaService": viaBackup}},
			},
			map[string]any{
				"Sid": "GrantsForBackup", "Effect": "Allow", "Principal": root, "Resource": "*",
				"Action": "kms:CreateGrant",
				"Condition": map[string]any{
					"Bool":         map[string]any{"kms:GrantIsForAWSResource": "true"},
					"StringEquals": map[string]any{"kms:CallerAccount": acct, "kms:ViaService": viaBackup},
				},
			},
		})
		got := plain(t, kp["KeyPolicy"].(map[string]any)["Statement"])
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("vault key policy (-want +got):\n%s", d)
		}

		// Nothing but AWS Backup uses it: no role's policy names it.
		for pid, pol := range s.resources("AWS::IAM::Policy") {
			if strings.Contains(js(props(pol)["PolicyDocument"]), `"`+keyID+`"`) {
				t.Errorf("policy %s names the vault's key", pid)
			}
		}
		// Every plan's rules back up into this vault.
		for pid, plan := range s.resources("AWS::Backup::BackupPlan") {
			for _, r := range props(plan)["BackupPlan"].(map[string]any)["BackupPlanRule"].([]any) {
				if tv := r.(map[string]any)["TargetBackupVault"]; refID(tv) != vaultID {
					t.Errorf("plan %s backs up into %s, want %s", pid, js(tv), vaultID)
				}
			}
		}
	})
}

// TestBackupCopy: with pipeline.backupCopy every rule of every plan copies
// its recovery points to the vault named, kept as long as the originals;
// without it, none does.
func TestBackupCopy(t *testing.T) {
	const dest = "arn:aws:backup:eu-central-1:210987654321:backup-vault:dicom-ingest-copies"
	copying := synthEnv(t, "prod-copy", variant("prod", "prodcopy", func(c *config.Config) {
		c.Pipeline.BackupCopy = &config.BackupCopy{VaultArn: dest}
	}))
	for _, f := range nagFindings(copying) {
		t.Error(f)
	}
	for _, s := range []*synthesized{synthEnv(t, "dev", example("dev")), synthEnv(t, "prod", example("prod")), copying} {
		t.Run(s.cfg.Name, func(t *testing.T) {
			plans := s.resources("AWS::Backup::BackupPlan")
			if len(plans) != 2 {
				t.Fatalf("%d backup plans, want the daily and the audit table's", len(plans))
			}
			for pid, plan := range plans {
				for _, r := range props(plan)["BackupPlan"].(map[string]any)["BackupPlanRule"].([]any) {
					rule := r.(map[string]any)
					got, _ := rule["CopyActions"].([]any)
					if s.cfg.Pipeline.BackupCopy == nil {
						if len(got) != 0 {
							t.Errorf("plan %s rule %v copies %s without pipeline.backupCopy", pid, rule["RuleName"], js(got))
						}
						continue
					}
					want := plain(t, []any{map[string]any{
						"DestinationBackupVaultArn": dest,
						"Lifecycle":                 rule["Lifecycle"],
					}})
					if d := cmp.Diff(want, plain(t, got)); d != "" {
						t.Errorf("plan %s rule %v copy actions (-want +got):\n%s", pid, rule["RuleName"], d)
					}
				}
			}
		})
	}
}

// backupRule returns the logical id and properties of the one rule of the
// template matching AWS Backup's events of detailType.
func (s *synthesized) backupRule(t *testing.T, detailType string) (string, map[string]any) {
	t.Helper()
	var id string
	var found map[string]any
	for rid, r := range s.resources("AWS::Events::Rule") {
		pat, _ := props(r)["EventPattern"].(map[string]any)
		if pat == nil || !slices.Contains(asStrings(pat["detail-type"]), detailType) {
			continue
		}
		if found != nil {
			t.Fatalf("rules %s and %s both match %q", id, rid, detailType)
		}
		id, found = rid, props(r)
	}
	if found == nil {
		t.Fatalf("no rule matches AWS Backup's %q events", detailType)
	}
	return id, found
}

// TestBackupFailuresAlert: a backup job into the stack's vault that ends
// FAILED, ABORTED or EXPIRED, and a copy job out of it or into it that
// ends FAILED, reach the alarm topic as AWS Backup's event (the field
// names are those of the example events in "Monitoring AWS Backup events
// using Amazon EventBridge"). The topic's policy lets EventBridge publish for these
// rules only, its key lets EventBridge encrypt for this account's topics,
// and a rule that cannot deliver sounds an alarm through CloudWatch.
// Nothing alerted on a failed backup or copy job.
func TestBackupFailuresAlert(t *testing.T) {
	copying := synthEnv(t, "prod-copy", variant("prod", "prodcopy", func(c *config.Config) {
		c.Pipeline.BackupCopy = &config.BackupCopy{VaultArn: "arn:aws:backup:eu-central-1:210987654321:backup-vault:dicom-ingest-copies"}
	}))
	for _, s := range []*synthesized{synthEnv(t, "dev", example("dev")), synthEnv(t, "prod", example("prod")), copying} {
		t.Run(s.cfg.Name, func(t *testing.T) {
			vaultID, _ := s.backupVault(t)
			vaultArn := map[string]any{"Fn::GetAtt": []any{vaultID, "BackupVaultArn"}}
			topicID := s.stack.logicalID(s.stack.Observability.Topic)
			var ruleIDs []string
			for _, c := range []struct {
				detailType string
				detail     map[string]any
			}{
				{"Backup Job State Change", map[string]any{"state": []string{"FAILED", "ABORTED", "EXPIRED"}, "backupVaultArn": []any{vaultArn}}},
				// The vault at either end: a copy into it started in this
				// account and Region (deploy.md's upgrade step) is this
				// bus's event too.
				{"Copy Job State Change", map[string]any{"state": []string{"FAILED"}, "$or": []any{
					map[string]any{"sourceBackupVaultArn": []any{vaultArn}},
					map[string]any{"destinationBackupVaultArn": []any{vaultArn}},
				}}},
			} {
				id, r := s.backupRule(t, c.detailType)
				ruleIDs = append(ruleIDs, id)
				want := plain(t, map[string]any{
					"source":      []string{"aws.backup"},
					"detail-type": []string{c.detailType},
					"detail":      c.detail,
				})
				if d := cmp.Diff(want, plain(t, r["EventPattern"])); d != "" {
					t.Errorf("rule %s pattern (-want +got):\n%s", id, d)
				}
				if r["State"] != "ENABLED" {
					t.Errorf("rule %s is %v", id, r["State"])
				}
				if r["EventBusName"] != nil {
					t.Errorf("rule %s is on bus %s; AWS Backup sends to the default bus", id, js(r["EventBusName"]))
				}
				targets := asAnySlice(r["Targets"])
				if len(targets) != 1 {
					t.Fatalf("rule %s has %d targets, want the alarm topic", id, len(targets))
				}
				tg := targets[0].(map[string]any)
				if refID(tg["Arn"]) != topicID {
					t.Errorf("rule %s targets %s, want the alarm topic %s", id, js(tg["Arn"]), topicID)
				}
				if tg["RoleArn"] != nil {
					t.Errorf("rule %s publishes with role %s; an encrypted topic wants its resource policy", id, js(tg["RoleArn"]))
				}
			}

			// The topic's policy: EventBridge may publish for these two
			// rules and the key alert's (TestKeyAlert), and no statement
			// lets it publish otherwise.
			ruleIDs = append(ruleIDs, s.stack.logicalID(s.stack.Observability.KeyAlert))
			wantRules := plain(t, []any{
				map[string]any{"Fn::GetAtt": []any{ruleIDs[0], "Arn"}},
				map[string]any{"Fn::GetAtt": []any{ruleIDs[1], "Arn"}},
				map[string]any{"Fn::GetAtt": []any{ruleIDs[2], "Arn"}},
			})
			allowed := 0
			for pid, p := range s.resources("AWS::SNS::TopicPolicy") {
				for _, st := range props(p)["PolicyDocument"].(map[string]any)["Statement"].([]any) {
					st := st.(map[string]any)
					principal, _ := st["Principal"].(map[string]any)
					if st["Effect"] != "Allow" || principal["Service"] != "events.amazonaws.com" {
						continue
					}
					want := plain(t, map[string]any{"ArnEquals": map[string]any{"aws:SourceArn": wantRules},
						"StringEquals": map[string]any{"aws:SourceAccount": map[string]any{"Ref": "AWS::AccountId"}}})
					if d := cmp.Diff(want, plain(t, st["Condition"])); d != "" || st["Action"] != "sns:Publish" || refID(st["Resource"]) != topicID {
						t.Errorf("%s: EventBridge may %v on %s under %s, want sns:Publish on the alarm topic for the alert rules only (-want +got):\n%s",
							pid, st["Action"], js(st["Resource"]), js(st["Condition"]), d)
					}
					allowed++
				}
			}
			if allowed != 1 {
				t.Errorf("%d topic policy statements let EventBridge publish, want 1", allowed)
			}

			// The topic's key: EventBridge may encrypt for (and decrypt
			// from) this account's topics, by SNS's encryption context.
			topic := props(s.res[topicID])
			keyID := refID(topic["KmsMasterKeyId"])
			if keyID == "" {
				t.Fatalf("the alarm topic is not under a key of the stack: %s", js(topic["KmsMasterKeyId"]))
			}
			found := false
			for _, st := range props(s.res[keyID])["KeyPolicy"].(map[string]any)["Statement"].([]any) {
				st := st.(map[string]any)
				principal, _ := st["Principal"].(map[string]any)
				if st["Effect"] != "Allow" || principal["Service"] != "events.amazonaws.com" {
					continue
				}
				cond, _ := st["Condition"].(map[string]any)
				like, _ := cond["StringLike"].(map[string]any)
				ctx, ok := like["kms:EncryptionContext:aws:sns:topicArn"]
				if !ok {
					// Another of EventBridge's uses (the bus, its archive,
					// the dead-letter queues): for what its context names.
					if !strings.Contains(js(cond), `"kms:EncryptionContext:`) {
						t.Errorf("key %s lets EventBridge use it for anything: %s", keyID, js(st))
					}
					continue
				}
				found = true
				if got := asStrings(st["Action"]); !slices.Equal(got, []string{"kms:Decrypt", "kms:GenerateDataKey*"}) {
					t.Errorf("key %s lets EventBridge %v on topics, want kms:Decrypt and kms:GenerateDataKey*", keyID, got)
				}
				if got := rendered(ctx); got != "arn:TOKEN:sns:TOKEN:TOKEN:*" {
					t.Errorf("key %s: EventBridge may use it for topics %s, want this account's in this Region", keyID, got)
				}
				// Nothing but the encryption context: SNS's KMS calls for
				// EventBridge carry no aws:SourceAccount or aws:SourceArn
				// ("not supported for EventBridge-to-encrypted topics",
				// Amazon SNS Developer Guide, Key management), so a
				// statement asking for either refused every event.
				if d := cmp.Diff([]string{"StringLike"}, slices.Sorted(maps.Keys(cond))); d != "" {
					t.Errorf("key %s: EventBridge's use for topics under %s, want the encryption context alone (-want +got):\n%s", keyID, js(cond), d)
				}
			}
			if !found {
				t.Errorf("key %s has no statement letting EventBridge encrypt for the alarm topic", keyID)
			}

			// A rule that cannot deliver sounds through CloudWatch.
			undelivered := map[string]bool{}
			for _, a := range s.resources("AWS::CloudWatch::Alarm") {
				p := props(a)
				for _, m := range alarmMetrics(p) {
					if m.namespace != "AWS/Events" || m.name != "FailedInvocations" || len(m.dims) != 1 {
						continue
					}
					if refID(p["AlarmActions"].([]any)[0]) != topicID {
						t.Errorf("the alarm on %s's FailedInvocations goes to %s", refID(m.dims["RuleName"]), js(p["AlarmActions"]))
					}
					undelivered[refID(m.dims["RuleName"])] = true
				}
			}
			for _, id := range ruleIDs {
				if !undelivered[id] {
					t.Errorf("no alarm on rule %s's FailedInvocations", id)
				}
			}
		})
	}
}
