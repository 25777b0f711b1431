// Command audit is the Lambda function for audit/ objects: it turns the
// SCP's association records into audit trail records.
package main

import (
	"context"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/dicom-ingest/dicom-ingest/functions/internal/lambdaio"
)

func main() {
	log := lambdaio.Logger("audit")
	cfg, err := lambdaio.ConfigFromEnv(os.Getenv, "BUCKET", "AUDIT_TABLE")
	if err != nil {
		log.Error("configuration", "err", err)
		os.Exit(1)
	}
	p, err := lambdaio.NewPipeline(context.Background(), cfg, log)
	if err != nil {
		log.Error("wiring", "err", err)
		os.Exit(1)
	}
	h := &lambdaio.ObjectHandler{Bucket: cfg.Bucket, Logger: log, Process: p.ProcessAuditRecord}
	lambda.Start(h.Handle)
}
