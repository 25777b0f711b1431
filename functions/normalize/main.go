// Command normalize is the Lambda function for objects validate handed on:
// it writes the DICOM JSON and normalized sidecars, updates the study
// index, appends the audit record and publishes Instance Stored. It runs
// the whole ProcessObject, so a message that reaches it by any route is
// validated first (reading a header costs little).
package main

import (
	"context"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/dicom-ingest/dicom-ingest/functions/internal/lambdaio"
)

func main() {
	log := lambdaio.Logger("normalize")
	cfg, err := lambdaio.ConfigFromEnv(os.Getenv, "BUCKET", "AUDIT_TABLE", "INDEX_TABLE", "EVENT_BUS_NAME")
	if err != nil {
		log.Error("configuration", "err", err)
		os.Exit(1)
	}
	p, err := lambdaio.NewPipeline(context.Background(), cfg, log)
	if err != nil {
		log.Error("wiring", "err", err)
		os.Exit(1)
	}
	h := &lambdaio.ObjectHandler{Bucket: cfg.Bucket, Logger: log, Process: func(ctx context.Context, key string) error {
		_, err := p.ProcessObject(ctx, key)
		return err
	}}
	lambda.Start(h.Handle)
}
