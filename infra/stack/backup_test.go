package stack

import (
	"encoding/json"
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
