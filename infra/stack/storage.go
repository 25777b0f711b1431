package stack

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssecretsmanager"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/dicom-ingest/dicom-ingest/infra/config"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
)

// S3 key prefixes of the DICOM bucket, as shared/objectstore defines its
// layout. The SCP writes incoming/ and audit/, the pipeline writes
// metadata/ and quarantine/.
const (
	PrefixIncoming   = objectstore.IncomingPrefix
	PrefixAudit      = objectstore.AuditPrefix
	PrefixMetadata   = objectstore.MetadataPrefix
	PrefixQuarantine = objectstore.QuarantinePrefix
	// Storage Commitment: the SCP's requests and the commitment function's
	// results.
	PrefixCommitmentRequests = objectstore.CommitmentRequestsPrefix
	PrefixCommitmentResults  = objectstore.CommitmentResultsPrefix
	// PrefixRunMarkers: without scp.staging, each task's run marker
	// (objectstore.RunMarkersPrefix), rewritten while it lives; no
	// function is notified of it.
	PrefixRunMarkers = objectstore.RunMarkersPrefix
)

// StorageProps configures NewStorage.
type StorageProps struct {
	Config *config.Config
}

// Storage holds the customer-managed key, the DICOM bucket and the key
// logs name objects with. Everything here is retained when the stack is
// deleted: it holds patient data, or (the log-name key) what links logs to it.
type Storage struct {
	constructs.Construct
	// Key encrypts the bucket, tables, secrets, log groups, the event bus
	// and the queues (not the alarm topic: newAlarmTopicKey).
	Key awskms.Key
	// BackupKey encrypts the backup vault's recovery points, and nothing
	// else: see newBackupKey.
	BackupKey awskms.Key
	Bucket    awss3.Bucket
	LogBucket awss3.Bucket
	// LogNameKey is the deployment's log-name key: logs name an object by
	// HMAC-SHA-256 of its key under it (docs/operations/logging.md). Only
	// the SCP's task execution role and the validate function may read it.
	LogNameKey awssecretsmanager.Secret
}

// NewStorage creates the key, the DICOM bucket, its access-log bucket and
// the log-name key.
func NewStorage(scope constructs.Construct, id string, props *StorageProps) *Storage {
	c := props.Config
	self := constructs.NewConstruct(scope, jsii.String(id))

	key := awskms.NewKey(self, jsii.String("Key"), &awskms.KeyProps{
		Description:       jsii.String("dicom-ingest " + c.Name + ": DICOM objects, audit trail, index, logs"),
		EnableKeyRotation: jsii.Bool(true),
		PendingWindow:     awscdk.Duration_Days(jsii.Number(30)),
		RemovalPolicy:     awscdk.RemovalPolicy_RETAIN,
	})
	// CloudWatch Logs encrypts log groups with the key only when the key
	// policy lets the regional logs service use it for this account's
	// groups (the encryption context names the group). The actions are
	// those CloudWatch Logs documents ("Encrypt log data in CloudWatch Logs
	// using AWS KMS"), each by its own name where its wildcard stood for
	// one action; ReEncrypt* (From, To) and GenerateDataKey* as documented.
	key.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String("CloudWatchLogs"),
		Principals: &[]awsiam.IPrincipal{awsiam.NewServicePrincipal(jsii.String("logs."+c.Region+".amazonaws.com"), nil)},
		Actions:    jsii.Strings("kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"),
		Resources:  jsii.Strings("*"),
		Conditions: &map[string]any{
			"ArnLike": map[string]any{"kms:EncryptionContext:aws:logs:arn": regionalArn("logs", "log-group:*")},
		},
	}), jsii.Bool(true))

	logBucket := awss3.NewBucket(self, jsii.String("AccessLogs"), &awss3.BucketProps{
		// S3 server access logs can only be delivered to SSE-S3 buckets.
		Encryption:        awss3.BucketEncryption_S3_MANAGED,
		EnforceSSL:        jsii.Bool(true),
		MinimumTLSVersion: jsii.Number(1.2),
		BlockPublicAccess: awss3.BlockPublicAccess_BLOCK_ALL(),
		ObjectOwnership:   awss3.ObjectOwnership_BUCKET_OWNER_ENFORCED,
		Versioned:         jsii.Bool(true),
		RemovalPolicy:     awscdk.RemovalPolicy_RETAIN,
		LifecycleRules: &[]*awss3.LifecycleRule{{
			Id:                          jsii.String("expire-access-logs"),
			Expiration:                  awscdk.Duration_Days(jsii.Number(float64(c.Storage.AccessLogRetentionDays))),
			NoncurrentVersionExpiration: awscdk.Duration_Days(jsii.Number(1)),
		}},
	})

	rules := []*awss3.LifecycleRule{{
		Id:                                  jsii.String("abort-incomplete-uploads"),
		AbortIncompleteMultipartUploadAfter: awscdk.Duration_Days(jsii.Number(1)),
	}}
	lc := c.Storage.Lifecycle
	var transitions []*awss3.Transition
	if lc.IntelligentTieringDays > 0 {
		transitions = append(transitions, &awss3.Transition{
			StorageClass:    awss3.StorageClass_INTELLIGENT_TIERING(),
			TransitionAfter: awscdk.Duration_Days(jsii.Number(float64(lc.IntelligentTieringDays))),
		})
	}
	if lc.GlacierInstantRetrievalDays > 0 {
		transitions = append(transitions, &awss3.Transition{
			StorageClass:    awss3.StorageClass_GLACIER_INSTANT_RETRIEVAL(),
			TransitionAfter: awscdk.Duration_Days(jsii.Number(float64(lc.GlacierInstantRetrievalDays))),
		})
	}
	if len(transitions) > 0 {
		rules = append(rules, &awss3.LifecycleRule{
			Id:          jsii.String("tier-incoming"),
			Prefix:      jsii.String(PrefixIncoming),
			Transitions: &transitions,
		})
	}
	if lc.AuditExpirationDays > 0 {
		rules = append(rules, &awss3.LifecycleRule{
			Id:         jsii.String("expire-scp-audit-records"),
			Prefix:     jsii.String(PrefixAudit),
			Expiration: awscdk.Duration_Days(jsii.Number(float64(lc.AuditExpirationDays))),
		})
	}
	if c.Scp.Staging == nil {
		// Each rewrite of a run marker leaves a noncurrent version (a
		// task rewrites its own every 5 s), of no use once replaced.
		rules = append(rules, &awss3.LifecycleRule{
			Id:                          jsii.String("expire-replaced-run-markers"),
			Prefix:                      jsii.String(PrefixRunMarkers),
			NoncurrentVersionExpiration: awscdk.Duration_Days(jsii.Number(1)),
			ExpiredObjectDeleteMarker:   jsii.Bool(true),
		})
	}
	if lc.NoncurrentVersionExpirationDays > 0 {
		rules = append(rules, &awss3.LifecycleRule{
			Id:                          jsii.String("expire-noncurrent-versions"),
			NoncurrentVersionExpiration: awscdk.Duration_Days(jsii.Number(float64(lc.NoncurrentVersionExpirationDays))),
		})
	}

	bucketProps := &awss3.BucketProps{
		Encryption:             awss3.BucketEncryption_KMS,
		EncryptionKey:          key,
		BucketKeyEnabled:       jsii.Bool(true),
		EnforceSSL:             jsii.Bool(true),
		MinimumTLSVersion:      jsii.Number(1.2),
		BlockPublicAccess:      awss3.BlockPublicAccess_BLOCK_ALL(),
		ObjectOwnership:        awss3.ObjectOwnership_BUCKET_OWNER_ENFORCED,
		Versioned:              jsii.Bool(true),
		ServerAccessLogsBucket: logBucket,
		ServerAccessLogsPrefix: jsii.String("dicom/"),
		LifecycleRules:         &rules,
		RemovalPolicy:          awscdk.RemovalPolicy_RETAIN,
	}
	if ol := c.Storage.ObjectLock; ol != nil {
		bucketProps.ObjectLockEnabled = jsii.Bool(true)
		days := awscdk.Duration_Days(jsii.Number(float64(ol.Days)))
		if ol.Mode == "COMPLIANCE" {
			bucketProps.ObjectLockDefaultRetention = awss3.ObjectLockRetention_Compliance(days)
		} else {
			bucketProps.ObjectLockDefaultRetention = awss3.ObjectLockRetention_Governance(days)
		}
	}
	bucket := awss3.NewBucket(self, jsii.String("Dicom"), bucketProps)
	// Objects must be encrypted with this key: a client asking for another
	// key or another kind of encryption is refused (no header at all means
	// the bucket default, this key), so the key policy governs all reads.
	// Clients that name the key must use its ARN (SCP_S3_KMS_KEY does).
	denyPutUnless := func(sid, header, value string) {
		bucket.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
			Sid:        jsii.String(sid),
			Effect:     awsiam.Effect_DENY,
			Principals: &[]awsiam.IPrincipal{awsiam.NewAnyPrincipal()},
			Actions:    jsii.Strings("s3:PutObject"),
			Resources:  jsii.Strings(*bucket.ArnForObjects(jsii.String("*"))),
			Conditions: &map[string]any{"StringNotEqualsIfExists": map[string]any{header: value}},
		}))
	}
	denyPutUnless("DenyOtherKeys", "s3:x-amz-server-side-encryption-aws-kms-key-id", *key.KeyArn())
	denyPutUnless("DenyOtherEncryption", "s3:x-amz-server-side-encryption", "aws:kms")

	logNameKey := awssecretsmanager.NewSecret(self, jsii.String("LogNameKey"), &awssecretsmanager.SecretProps{
		Description:   jsii.String("dicom-ingest " + c.Name + ": the key logs name objects with (HMAC-SHA-256 of the object key); see docs/operations/logging.md"),
		EncryptionKey: key,
		GenerateSecretString: &awssecretsmanager.SecretStringGenerator{
			PasswordLength:     jsii.Number(64),
			ExcludePunctuation: jsii.Bool(true),
			IncludeSpace:       jsii.Bool(false),
		},
		// Retained with the logs it explains: without it, names in
		// retained log lines no longer lead to their objects.
		RemovalPolicy: awscdk.RemovalPolicy_RETAIN,
	})

	return &Storage{Construct: self, Key: key, BackupKey: newBackupKey(self, c), Bucket: bucket, LogBucket: logBucket, LogNameKey: logNameKey}
}

// newBackupKey creates the key of the backup vault. Recovery points under
// the key of the data they protect share its fate: disabling that key,
// scheduling its deletion or changing its policy would make the backups
// unrestorable along with the data. This key is used by AWS Backup alone,
// in this Region, for this account (kms:ViaService, kms:CallerAccount):
// no role of the stack may use it, and its policy has no kms:* for the
// account, so IAM policies (AdministratorAccess included) cannot let
// anyone encrypt or decrypt with it directly. The account administers it
// but may not disable it or schedule its deletion without first changing
// this policy (PutKeyPolicy), a step of its own in CloudTrail.
//
// The statements carry no encryption-context condition: AWS Backup does
// not document the context it uses, and a wrong one would refuse every
// backup. Backups of resource types fully managed by AWS Backup are
// encrypted with the vault's key: EFS, and DynamoDB with advanced
// DynamoDB backup; without it, DynamoDB's recovery points stay under the
// table's key ("Encryption for backups in AWS Backup", AWS Backup
// Developer Guide). See docs/operations/deploy.md (backups).
func newBackupKey(scope constructs.Construct, c *config.Config) awskms.Key {
	admin := awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String("KeyAdministration"),
		Principals: &[]awsiam.IPrincipal{awsiam.NewAccountRootPrincipal()},
		// Not kms:DisableKey, kms:ScheduleKeyDeletion, nor any
		// cryptographic operation or kms:CreateGrant.
		Actions: jsii.Strings("kms:CancelKeyDeletion", "kms:CreateAlias", "kms:DeleteAlias", "kms:DescribeKey",
			"kms:EnableKey", "kms:EnableKeyRotation", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus",
			"kms:ListGrants", "kms:ListKeyPolicies", "kms:ListKeyRotations", "kms:ListResourceTags",
			"kms:PutKeyPolicy", "kms:RevokeGrant", "kms:RotateKeyOnDemand", "kms:TagResource",
			"kms:UntagResource", "kms:UpdateAlias", "kms:UpdateKeyDescription"),
		Resources: jsii.Strings("*"),
	})
	// What creating the vault, and the backup, copy and restore jobs ask
	// of the key: AWS Backup calls KMS on the caller's (or the job role's)
	// behalf, and creates grants for its own use of the key.
	use := keyPolicyVia("UseThroughBackup", c.Account, "backup",
		[]string{"kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*", "kms:RetireGrant"}, nil)
	grants := keyPolicyVia("GrantsForBackup", c.Account, "backup", []string{"kms:CreateGrant"},
		map[string]map[string]any{"Bool": {"kms:GrantIsForAWSResource": "true"}})
	return awskms.NewKey(scope, jsii.String("BackupKey"), &awskms.KeyProps{
		Description:       jsii.String("dicom-ingest " + c.Name + ": the backup vault's recovery points (AWS Backup only)"),
		EnableKeyRotation: jsii.Bool(true),
		PendingWindow:     awscdk.Duration_Days(jsii.Number(30)),
		RemovalPolicy:     awscdk.RemovalPolicy_RETAIN,
		// A policy given replaces CDK's default one (the account's kms:*).
		Policy: awsiam.NewPolicyDocument(&awsiam.PolicyDocumentProps{Statements: &[]awsiam.PolicyStatement{admin, use, grants}}),
	})
}
