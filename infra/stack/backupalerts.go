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
//     CREATED) and detail.sourceBackupVaultArn, the vault copied from
//     (with destinationBackupVaultArn, copyJobId, statusMessage).
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
	CopyFailed awsevents.Rule // a copy job out of it (pipeline.backupCopy)
}

// newBackupAlerts sends to the alarm topic (through target, which
// deliverAlerts lets publish) every backup job into vault and every copy
// job out of it that ends in a failed state.
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
		CopyFailed: rule("BackupCopyFailed", "AWS Backup: a copy job from the stack's vault failed (docs/operations/alarms.md)",
			copyJobStateChange, map[string]any{"state": copyJobFailedStates, "sourceBackupVaultArn": []*string{vault.BackupVaultArn()}}),
	}
}
