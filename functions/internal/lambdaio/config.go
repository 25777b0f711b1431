package lambdaio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/arn"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/dicom-ingest/dicom-ingest/shared/awsadapters"
	"github.com/dicom-ingest/dicom-ingest/shared/commitreport"
	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog"
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// Config is read from the environment:
//
//	BUCKET              bucket holding incoming/, audit/, quarantine/, metadata/
//	BUCKET_ARN          its ARN, arn:<partition>:s3:::<BUCKET> (the stack's,
//	                    which knows the partition): events name objects in
//	                    their resources by ARN (validate, commitment)
//	AUDIT_TABLE         DynamoDB audit table
//	INDEX_TABLE         DynamoDB index table
//	EVENT_BUS_NAME      EventBridge bus
//	QUIET_PERIOD        Go duration (default 60s); QUIET_PERIOD_SECONDS also accepted
//	EVENT_PATIENT_DATA  none (default) | id | full
//	S3_FORCE_PATH_STYLE true for S3-compatible emulators
//	LOG_NAME_KEY_SECRET_ARN  Secrets Manager secret holding the deployment's
//	                    log-name key (objects are named in logs by a keyed
//	                    digest of their key; see logname)
//	DICOM_INGEST_LOG_KEY the key itself, instead of the secret (tests); with
//	                    neither, names hold only within one cold start
//	AE_TITLE            commitment: our AE title, calling the requesting AEs
//	COMMITMENT_PEERS    commitment: AE=[tls://]host:port,… (where results go)
//	COMMITMENT_TLS      commitment: each tls:// peer's CA and the ARN of
//	                    the secret of our client certificate for it (JSON,
//	                    commitreport.TLSPeers)
//	COMMITMENT_WAIT_SECONDS  commitment: instances in flight (default 300)
//	COMMITMENT_REPORT_MINUTES commitment: delivery retried (default 60)
//	COMMITMENT_QUARANTINED_COMMITTED commitment: AE titles whose
//	                    quarantined instances count as committed
//
// Endpoints follow the SDK's own variables (AWS_ENDPOINT_URL_S3, ...).
type Config struct {
	Bucket, AuditTable, IndexTable, EventBus string
	// BucketARN is Bucket's ARN, checked to name it.
	BucketARN   string
	QuietPeriod time.Duration
	PatientData pipeline.PatientDataPolicy
	PathStyle   bool
	// LogKey and LogKeySecretARN: the log-name key, or where it is.
	LogKey, LogKeySecretARN string

	// Storage Commitment (the commitment function).
	AETitle               string
	CommitmentPeers       commitreport.Peers
	CommitmentTLS         commitreport.TLSPeers
	CommitmentWait        time.Duration
	CommitmentReportFor   time.Duration
	CommitmentQuarantined map[string]bool
}

// ConfigFromEnv reads and checks Config; need lists the variables the
// function requires.
func ConfigFromEnv(getenv func(string) string, need ...string) (Config, error) {
	c := Config{
		Bucket: getenv("BUCKET"), BucketARN: getenv("BUCKET_ARN"), AuditTable: getenv("AUDIT_TABLE"), IndexTable: getenv("INDEX_TABLE"),
		EventBus: getenv("EVENT_BUS_NAME"), QuietPeriod: pipeline.DefaultQuietPeriod,
		PathStyle: getenv("S3_FORCE_PATH_STYLE") == "true",
		LogKey:    getenv(logname.EnvKey), LogKeySecretARN: getenv(logname.SecretARNEnv),
	}
	for _, n := range need {
		if getenv(n) == "" {
			return c, fmt.Errorf("lambdaio: environment variable %s is required", n)
		}
	}
	if c.BucketARN != "" {
		if err := checkBucketARN(c.BucketARN, c.Bucket); err != nil {
			return c, err
		}
	}
	if v := getenv("QUIET_PERIOD"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return c, fmt.Errorf("lambdaio: QUIET_PERIOD %q: want a positive duration like 60s", v)
		}
		c.QuietPeriod = d
	} else if v := getenv("QUIET_PERIOD_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return c, fmt.Errorf("lambdaio: QUIET_PERIOD_SECONDS %q: want a positive integer", v)
		}
		c.QuietPeriod = time.Duration(n) * time.Second
	}
	if err := c.commitmentFromEnv(getenv); err != nil {
		return c, err
	}
	p, err := pipeline.ParsePatientDataPolicy(getenv("EVENT_PATIENT_DATA"))
	if err != nil {
		return c, fmt.Errorf("lambdaio: EVENT_PATIENT_DATA: %w", err)
	}
	c.PatientData = p
	return c, nil
}

// checkBucketARN checks that v is an S3 bucket's ARN, bucket's when that
// is set: arn:<partition>:s3:::<bucket>, with no region, account or key.
// The pipeline puts it before a key to name an object in events'
// resources.
func checkBucketARN(v, bucket string) error {
	a, err := arn.Parse(v)
	if err != nil {
		return fmt.Errorf("lambdaio: BUCKET_ARN %q: %w", v, err)
	}
	if a.Service != "s3" || a.Region != "" || a.AccountID != "" || a.Resource == "" || strings.Contains(a.Resource, "/") ||
		(bucket != "" && a.Resource != bucket) {
		return fmt.Errorf("lambdaio: BUCKET_ARN %q: want the ARN of bucket %q, arn:<partition>:s3:::<bucket>", v, bucket)
	}
	return nil
}

// commitmentFromEnv reads the commitment function's settings.
func (c *Config) commitmentFromEnv(getenv func(string) string) error {
	c.AETitle = getenv("AE_TITLE")
	peers, err := commitreport.ParsePeers(getenv("COMMITMENT_PEERS"))
	if err != nil {
		return fmt.Errorf("lambdaio: COMMITMENT_PEERS: %w", err)
	}
	if c.CommitmentTLS, err = parseCommitmentTLS(getenv(CommitmentTLSEnv), peers); err != nil {
		return err
	}
	c.CommitmentPeers = peers
	c.CommitmentWait, c.CommitmentReportFor = pipeline.DefaultCommitmentWait, pipeline.DefaultCommitmentReportFor
	for _, v := range []struct {
		name string
		unit time.Duration
		dst  *time.Duration
	}{{"COMMITMENT_WAIT_SECONDS", time.Second, &c.CommitmentWait}, {"COMMITMENT_REPORT_MINUTES", time.Minute, &c.CommitmentReportFor}} {
		if s := getenv(v.name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				return fmt.Errorf("lambdaio: %s %q: want a positive integer", v.name, s)
			}
			*v.dst = time.Duration(n) * v.unit
		}
	}
	c.CommitmentQuarantined = map[string]bool{}
	for _, ae := range strings.Split(getenv("COMMITMENT_QUARANTINED_COMMITTED"), ",") {
		if ae = strings.TrimSpace(ae); ae != "" {
			c.CommitmentQuarantined[ae] = true
		}
	}
	return nil
}

// NewCommitment wires the commitment function: the pipeline with the index
// (instances, studies), the audit trail, the commitment transactions in the
// index table and a reporter that opens associations to the sites' PACS
// (NewReporter).
func NewCommitment(ctx context.Context, c Config, log *slog.Logger) (*pipeline.Pipeline, error) {
	p, ddb, sm, err := newIndexed(ctx, c, log)
	if err != nil {
		return nil, err
	}
	p.Commitments = &awsadapters.CommitmentTable{Client: ddb, Table: c.IndexTable}
	r, err := NewReporter(c, sm, log)
	if err != nil {
		return nil, err
	}
	p.Reporter = r
	p.CommitmentWait, p.CommitmentReportFor = c.CommitmentWait, c.CommitmentReportFor
	quarantined := c.CommitmentQuarantined
	p.QuarantinedCommitted = func(ae string) bool { return quarantined[ae] }
	return p, nil
}

// NewPipeline builds the AWS clients once (at init) and wires the
// pipeline's ports to them.
func NewPipeline(ctx context.Context, c Config, log *slog.Logger) (*pipeline.Pipeline, error) {
	p, _, _, err := newIndexed(ctx, c, log)
	return p, err
}

// newIndexed is NewPipeline, with the DynamoDB client for what else lives
// in the index table.
func newIndexed(ctx context.Context, c Config, log *slog.Logger) (*pipeline.Pipeline, *dynamodb.Client, SecretsAPI, error) {
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("lambdaio: aws config: %w", err)
	}
	sm := secretsmanager.NewFromConfig(awsCfg)
	names, err := loadNames(ctx, sm, c, log)
	if err != nil {
		return nil, nil, nil, err
	}
	p, ddb := newPipeline(awsCfg, c, names, log)
	p.Index = &awsadapters.IndexTable{Client: ddb, Table: c.IndexTable, Logger: log}
	return p, ddb, sm, nil
}

// newPipeline wires the ports every function uses (objects, audit,
// events) and returns the DynamoDB client for the caller's index.
func newPipeline(awsCfg aws.Config, c Config, names *logname.Namer, log *slog.Logger) (*pipeline.Pipeline, *dynamodb.Client) {
	s3c := s3.NewFromConfig(awsCfg, func(o *s3.Options) { o.UsePathStyle = c.PathStyle })
	ddb := dynamodb.NewFromConfig(awsCfg)
	eb := eventbridge.NewFromConfig(awsCfg)
	objects := &awsadapters.S3Objects{Client: s3c, Bucket: c.Bucket, Names: names}
	return &pipeline.Pipeline{
		Objects: objects, Writer: objects,
		Audit:  &awsadapters.AuditTable{Client: ddb, Table: c.AuditTable},
		Events: &awsadapters.EventBridgePublisher{Client: eb, BusName: c.EventBus},
		Logger: log, Names: names, QuietPeriod: c.QuietPeriod, PatientData: c.PatientData, BucketName: c.Bucket,
		BucketARN: c.BucketARN,
	}, ddb
}

// SecretsAPI is the one Secrets Manager call the functions make.
type SecretsAPI interface {
	GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
}

// KeyReadTimeout bounds a function's reads of its secrets at cold start
// (ReadSecrets: the log-name key, the audit feed's CA and client
// certificate), all of them together, the SDK's retries included: well
// inside Lambda's 10 s init, so that a Secrets Manager that does not
// answer (its endpoint, a security group) fails the start with the
// function's wiring or configuration line, naming the secret's variable,
// instead of an init timed out with no line, tried again inside the
// invocation until its own timeout.
const KeyReadTimeout = 5 * time.Second

// Secret is a secret a function reads at cold start: Setting is the
// environment variable that names it, ARN that variable's value.
type Secret struct{ Setting, ARN string }

// ReadSecrets reads the secrets' strings, in order, all within
// KeyReadTimeout; a secret with no ARN (an optional setting left unset)
// reads as "". An error names the secret's Setting and never its value;
// Secrets Manager's own message, wrapped, may name the ARN (not a secret).
func ReadSecrets(ctx context.Context, sm SecretsAPI, secrets ...Secret) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, KeyReadTimeout)
	defer cancel()
	out := make([]string, len(secrets))
	for i, s := range secrets {
		if s.ARN == "" {
			continue
		}
		v, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: &s.ARN})
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("%s: no answer from Secrets Manager within %v: %w", s.Setting, KeyReadTimeout, err)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.Setting, err)
		}
		if v.SecretString == nil {
			return nil, fmt.Errorf("%s: the secret holds no string", s.Setting)
		}
		out[i] = *v.SecretString
	}
	return out, nil
}

// loadNames returns the Namer of the deployment's log-name key, read once
// at init, within KeyReadTimeout. Without a key it returns nil (a key
// drawn for this cold start) and says so: names then match only within
// one execution environment.
func loadNames(ctx context.Context, sm SecretsAPI, c Config, log *slog.Logger) (*logname.Namer, error) {
	key := c.LogKey
	if key == "" && c.LogKeySecretARN != "" {
		v, err := ReadSecrets(ctx, sm, Secret{logname.SecretARNEnv, c.LogKeySecretARN})
		if err != nil {
			return nil, fmt.Errorf("lambdaio: %w", err)
		}
		key = v[0]
	}
	if key == "" {
		log.Warn("no log-name key configured: object names in logs hold only within this execution environment",
			"env", logname.SecretARNEnv)
		return nil, nil
	}
	n, err := logname.New([]byte(key))
	if err != nil {
		return nil, fmt.Errorf("lambdaio: log-name key: %w", err)
	}
	return n, nil
}

// Logger is the JSON logger every function uses (Lambda's JSON log format,
// the same lines as every other command's). Lines carry the environment's
// name (ENVIRONMENT), which metric filters take as their Environment
// dimension.
func Logger(function string) *slog.Logger {
	return LoggerTo(os.Stdout, function, os.Getenv("ENVIRONMENT"))
}

// LoggerTo is Logger writing to w, its lines naming the environment env
// (none when empty): the very lines a function logs, for its tests.
func LoggerTo(w io.Writer, function, env string) *slog.Logger {
	log := jsonlog.New(w, slog.LevelInfo).With("function", function)
	if env != "" {
		log = log.With(jsonlog.EnvironmentKey, env)
	}
	return log
}
