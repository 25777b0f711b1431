// Command validate is the Lambda function for incoming/ objects. It runs
// the whole of pipeline.ProcessObject in one pass over the header: an
// invalid object is quarantined, audited and announced as Instance
// Rejected; a valid one gets its sidecars, its index entry, its audit
// record and Instance Stored.
package main

import (
	"context"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/dicom-ingest/dicom-ingest/functions/internal/lambdaio"
	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
)

func main() {
	log := lambdaio.Logger("validate")
	cfg, err := lambdaio.ConfigFromEnv(os.Getenv, "BUCKET", "BUCKET_ARN", "AUDIT_TABLE", "INDEX_TABLE", "EVENT_BUS_NAME")
	if err != nil {
		log.Error("configuration", "err", err)
		os.Exit(1)
	}
	p, err := lambdaio.NewPipeline(context.Background(), cfg, log)
	if err != nil {
		log.Error("wiring", "err", err)
		os.Exit(1)
	}
	// An object's header may hold dataset.MaxHeldBytes of values, read into
	// memory: the batch reads one such at a time.
	h := &lambdaio.ObjectHandler{Bucket: cfg.Bucket, Logger: log, ReadBudget: dataset.MaxHeldBytes, Process: func(ctx context.Context, key string) error {
		_, err := p.ProcessObject(ctx, key)
		return err
	}}
	lambda.Start(h.Handle)
}
