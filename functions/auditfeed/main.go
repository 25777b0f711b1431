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
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/dicom-ingest/dicom-ingest/functions/internal/lambdaio"
	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// CertificateNotValidLog is the message of the warning of a client certificate that is expired or not yet valid,
// once per backoff window of its secret: the function runs, and the deliveries that present it fail until the
// secret holds a valid one (read again when the window ends) or it becomes valid.
const CertificateNotValidLog = "audit feed: our client certificate is not valid now; deliveries that present it fail"

// SecretsUnusableLog is the message of the warning of secrets that could not be read, or hold no usable CA or client
// certificate, once per backoff window (lambdaio.KeptSecret, the commitment function's rule): the configuration read
// before stays in use (auditfeed.TLSNotReloadedLog), or, with none, each batch fails meanwhile
// (auditfeed.BatchNotDeliveredLog), and the secrets are read again when the window ends, so a secret fixed is taken
// without a cold start.
const SecretsUnusableLog = "audit feed: secrets not usable; not read again before the backoff ends"

func main() {
	log := lambdaio.Logger("auditfeed")
	ctx := context.Background()
	h, err := newHandler(ctx, os.Getenv, log)
	if err != nil {
		log.Error("configuration", "err", err)
		os.Exit(1)
	}
	lambda.Start(h.Handle)
}

// newHandler reads the configuration at cold start; the secrets are read at
// the first batch, each within lambdaio.KeyReadTimeout, and kept.
func newHandler(ctx context.Context, getenv func(string) string, log *slog.Logger) (*handler, error) {
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("auditfeed: aws config: %w", err)
	}
	return configure(getenv, secretsmanager.NewFromConfig(awsCfg), log)
}

// configure makes the handler of the environment's settings. Its secrets, the collector CA and our client
// certificate, are read at the first batch and kept by the rule of every secret a function keeps
// (lambdaio.KeptSecret): read again after lambdaio.ClientCredentialMaxAge, or at the next batch after a failed
// handshake with the collector (a rotation is taken without a cold start), and, when they could not be read or hold
// nothing usable, not before their backoff window ends: meanwhile the configuration read last stays in use
// (auditfeed.ReloadTLS), or, with none, each batch fails, logged, without a read. Read at cold start, a bad secret
// failed every start, and each of Lambda's retries, a cold start, read it and logged it again.
func configure(getenv func(string) string, sm lambdaio.SecretsAPI, log *slog.Logger) (*handler, error) {
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
	caARN, clientARN := getenv("SYSLOG_CA_SECRET_ARN"), getenv("SYSLOG_CLIENT_CERT_SECRET_ARN")
	if caARN == "" {
		return nil, fmt.Errorf("auditfeed: SYSLOG_CA_SECRET_ARN is required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	secrets := &lambdaio.KeptSecret[*tls.Config]{
		Read: func(ctx context.Context) (*tls.Config, error, error) { return readTLS(ctx, sm, host, caARN, clientARN) },
		WindowStarted: func(wait time.Duration, readErr, useErr error) {
			retry := wait.Round(time.Millisecond).String()
			if errors.Is(useErr, tlstrust.ErrNotValidNow) {
				log.Warn(CertificateNotValidLog, "retry_in", retry, "err", useErr)
				return
			}
			log.Warn(SecretsUnusableLog, "retry_in", retry, "err", errors.Join(readErr, useErr))
		},
	}
	hostname := getenv("SYSLOG_HOSTNAME")
	if hostname == "" {
		hostname = getenv("AWS_LAMBDA_FUNCTION_NAME")
	}
	return &handler{
		// Secrets read again that do not load leave the configuration read last in use (auditfeed.ReloadTLS), as
		// scp-task's files and the commitment function's certificates do; one expired, or not yet valid, is offered
		// only while valid, so a collector that asks for none still takes the batch.
		sender:    &auditfeed.Collector{Addr: net.JoinHostPort(host, strconv.Itoa(port)), LoadTLS: auditfeed.ReloadTLS(nil, secrets.Get, log)},
		header:    auditfeed.Header{Hostname: hostname},
		log:       log,
		tlsFailed: secrets.Forget,
	}, nil
}

// readTLS reads the CA secret and the client certificate's (optional: unset, it reads as none), both within one
// lambdaio.KeyReadTimeout, and makes the collector's TLS client configuration (auditfeed.TLSConfig), each failure
// naming the setting: readErr when a secret was not read, useErr when what it holds is not usable (with the
// configuration when our certificate is refused for its dates alone).
func readTLS(ctx context.Context, sm lambdaio.SecretsAPI, host, caARN, clientARN string) (*tls.Config, error, error) {
	pems, err := lambdaio.ReadSecrets(ctx, sm,
		lambdaio.Secret{Setting: "SYSLOG_CA_SECRET_ARN", ARN: caARN},
		lambdaio.Secret{Setting: "SYSLOG_CLIENT_CERT_SECRET_ARN", ARN: clientARN})
	if err != nil {
		return nil, fmt.Errorf("auditfeed: %w", err), nil
	}
	ca, client := []byte(pems[0]), []byte(pems[1])
	tlsCfg, err := auditfeed.TLSConfig(host, ca, client, client)
	switch {
	case errors.Is(err, tlstrust.ErrNotValidNow) && tlsCfg != nil:
		return tlsCfg, nil, fmt.Errorf("auditfeed: SYSLOG_CLIENT_CERT_SECRET_ARN: %w", err)
	case errors.Is(err, auditfeed.ErrCA):
		return nil, nil, fmt.Errorf("auditfeed: SYSLOG_CA_SECRET_ARN: %w", err)
	case errors.Is(err, auditfeed.ErrClientCertificate):
		return nil, nil, fmt.Errorf("auditfeed: SYSLOG_CLIENT_CERT_SECRET_ARN: %w", err)
	case err != nil:
		return nil, nil, err
	}
	return tlsCfg, nil, nil
}
