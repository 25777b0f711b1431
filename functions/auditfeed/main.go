// Command auditfeed is the Lambda function on the audit table's DynamoDB
// stream: it renders every new audit record as DICOM PS3.15 A.5 audit
// messages and sends them over syslog TLS (RFC 5424 messages, RFC 5425
// framing) to the hospital's collector, at least once.
//
// Environment:
//
//	SYSLOG_HOST                    the collector's DNS name or IPv4 address (and its certificate's name)
//	SYSLOG_PORT                    its port (default 6514)
//	SYSLOG_CA_SECRET_ARN           secret holding the PEM CA the collector's certificate chains to
//	SYSLOG_CLIENT_CERT_SECRET_ARN  optional: secret holding our PEM client certificate and key (mutual TLS)
//	SYSLOG_HOSTNAME                the syslog HOSTNAME we send (default the function's name)
//	ENVIRONMENT                    the deployment's name, on every log line (lambdaio.Logger)
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/dicom-ingest/dicom-ingest/functions/internal/lambdaio"
	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// CertificateNotValidLog is the message of the cold start's warning of a client certificate that is expired or not
// yet valid: the function runs, and the deliveries that present it fail until the secret holds a valid one.
const CertificateNotValidLog = "audit feed: our client certificate is not valid now; deliveries that present it fail"

func main() {
	log := lambdaio.Logger("auditfeed")
	ctx := context.Background()
	h, err := newHandler(ctx, os.Getenv)
	if err != nil {
		log.Error("configuration", "err", err)
		os.Exit(1)
	}
	h.log = log
	if h.certificateNotValid != nil {
		// Once per execution environment; each delivery it fails is the batch's "not delivered" line, retried.
		log.Warn(CertificateNotValidLog, "err", h.certificateNotValid)
	}
	lambda.Start(h.Handle)
}

// newHandler reads the configuration and the secrets once, at cold start,
// the secrets within lambdaio.KeyReadTimeout.
func newHandler(ctx context.Context, getenv func(string) string) (*handler, error) {
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("auditfeed: aws config: %w", err)
	}
	return configure(ctx, getenv, secretsmanager.NewFromConfig(awsCfg))
}

func configure(ctx context.Context, getenv func(string) string, sm lambdaio.SecretsAPI) (*handler, error) {
	host := getenv("SYSLOG_HOST")
	if host == "" {
		return nil, fmt.Errorf("auditfeed: SYSLOG_HOST is required")
	}
	port := auditfeed.DefaultPort
	if v := getenv("SYSLOG_PORT"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("auditfeed: SYSLOG_PORT %q is not a TCP port", v)
		}
		port = n
	}
	if getenv("SYSLOG_CA_SECRET_ARN") == "" {
		return nil, fmt.Errorf("auditfeed: SYSLOG_CA_SECRET_ARN is required")
	}
	// One secret holds both the client certificate and its key (optional:
	// unset, it reads as none).
	pems, err := lambdaio.ReadSecrets(ctx, sm,
		lambdaio.Secret{Setting: "SYSLOG_CA_SECRET_ARN", ARN: getenv("SYSLOG_CA_SECRET_ARN")},
		lambdaio.Secret{Setting: "SYSLOG_CLIENT_CERT_SECRET_ARN", ARN: getenv("SYSLOG_CLIENT_CERT_SECRET_ARN")})
	if err != nil {
		return nil, fmt.Errorf("auditfeed: %w", err)
	}
	ca, client := []byte(pems[0]), []byte(pems[1])
	tlsCfg, err := auditfeed.TLSConfig(host, ca, client, client)
	var notValid error
	switch {
	case errors.Is(err, tlstrust.ErrNotValidNow) && tlsCfg != nil:
		// Expired, or not yet valid: the audit table keeps the records, the stream waits; the function starts
		// and each delivery that presents it fails (tlstrust.ClientConfig's check), retried by Lambda, until the
		// secret holds a valid one (read at the next cold start) or it becomes valid.
		notValid, err = fmt.Errorf("auditfeed: SYSLOG_CLIENT_CERT_SECRET_ARN: %w", err), nil
	case errors.Is(err, auditfeed.ErrCA):
		return nil, fmt.Errorf("auditfeed: SYSLOG_CA_SECRET_ARN: %w", err)
	case errors.Is(err, auditfeed.ErrClientCertificate):
		return nil, fmt.Errorf("auditfeed: SYSLOG_CLIENT_CERT_SECRET_ARN: %w", err)
	}
	if err != nil {
		return nil, err
	}
	hostname := getenv("SYSLOG_HOSTNAME")
	if hostname == "" {
		hostname = getenv("AWS_LAMBDA_FUNCTION_NAME")
	}
	return &handler{
		sender: &auditfeed.Collector{Addr: net.JoinHostPort(host, strconv.Itoa(port)), TLS: tlsCfg},
		header: auditfeed.Header{Hostname: hostname},
		log:    slog.New(slog.DiscardHandler),

		certificateNotValid: notValid,
	}, nil
}
