package stack

import (
	"github.com/aws/aws-cdk-go/awscdk/v2/awsbackup"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
)

// AWS Backup's EventBridge events ("Monitoring AWS Backup events using
// Amazon EventBridge", AWS Backup Developer Guide,
// https://docs.aws.amazon.com/aws-backup/latest/devguide/eventbridge.html),
// sent to the default bus of the account and Region, source "aws.backup",
// "in a best-effort manner every 5 minutes". The example events give the
// fields matched here:
//   - "Backup Job State Change": detail.state (the example states FAILED,
//     COMPLETED, RUNNING, ABORTED, EXPIRED, PENDING, CREATED) and
//     detail.backupVaultArn, the vault the job writes to (with
//     backupVaultName, backupJobId, resourceArn, statusMessage).
//   - "Copy Job State Change": detail.state (FAILED, RUNNING, COMPLETED,
//     CREATED), detail.sourceBackupVaultArn, the vault copied from, and
//     detail.destinationBackupVaultArn, the vault copied to (with
//     copyJobId, statusMessage).
//
// A copy job belongs to the account that starts it, the source vault's
// (StartCopyJob names the source vault by name, in the caller's account
// and Region; the CopyJob's AccountId is "the account ID that owns the
// copy job"), and its events go to that account's default bus in that
// Region. So this account's bus has the copies from the vault (the plans'
// copy to pipeline.backupCopy, one started by hand) and the copies into
// it started here (docs/operations/deploy.md's upgrade step, from the old
// vault in the same account and Region): the rule matches the vault as
// either end. A copy back into it from the other account's vault, or from
// another Region, is that account's or Region's job, whose events this
// bus never sees (docs/operations/alarms.md says so).
//
// A backup job that ends FAILED, ABORTED (stopped, by someone or by AWS
// Backup) or EXPIRED (not started or not finished within its window: the
// example's "there was a running job for the same resource") made no
// recovery point. Copy jobs have no ABORTED or EXPIRED state (the CopyJob
// API's State: CREATED, RUNNING, COMPLETED, FAILED, PARTIAL); PARTIAL, in
// both, is a composite (parent) job's, which tables are not.
const (
	backupEventSource    = "aws.backup"
	backupJobStateChange = "Backup Job State Change"
	copyJobStateChange   = "Copy Job State Change"
)

var (
	backupJobFailedStates = []string{"FAILED", "ABORTED", "EXPIRED"}
	copyJobFailedStates   = []string{"FAILED"}
)

// BackupAlerts are the rules that send AWS Backup's failure events for the
// stack's vault to the alarm topic.
type BackupAlerts struct {
	JobFailed  awsevents.Rule // a backup job into the vault
	CopyFailed awsevents.Rule // a copy job out of it (pipeline.backupCopy), or into it from here
}

// newBackupAlerts sends to the alarm topic (through target, which
// deliverAlerts lets publish) every backup job into vault and every copy
// job of this account and Region out of it or into it that ends in a
// failed state.
func newBackupAlerts(scope constructs.Construct, target *alarmTopicTarget, vault awsbackup.IBackupVault) *BackupAlerts {
	rule := func(id, desc, detailType string, detail map[string]any) awsevents.Rule {
		return awsevents.NewRule(scope, jsii.String(id), &awsevents.RuleProps{
			Description: jsii.String(desc),
			EventPattern: &awsevents.EventPattern{
				Source:     jsii.Strings(backupEventSource),
				DetailType: jsii.Strings(detailType),
				Detail:     &detail,
			},
			Targets: &[]awsevents.IRuleTarget{target},
		})
	}
	return &BackupAlerts{
		JobFailed: rule("BackupJobFailed", "AWS Backup: a backup job into the stack's vault failed, was aborted or expired (docs/operations/alarms.md)",
			backupJobStateChange, map[string]any{"state": backupJobFailedStates, "backupVaultArn": []*string{vault.BackupVaultArn()}}),
		CopyFailed: rule("BackupCopyFailed", "AWS Backup: a copy job from or into the stack's vault failed (docs/operations/alarms.md)",
			copyJobStateChange, map[string]any{"state": copyJobFailedStates, "$or": []map[string]any{
				{"sourceBackupVaultArn": []*string{vault.BackupVaultArn()}},
				{"destinationBackupVaultArn": []*string{vault.BackupVaultArn()}},
			}}),
	}
}
