// Command validate is the Lambda function for incoming/ objects. It
// validates each object from its header; an invalid one is quarantined,
// audited and announced as Instance Rejected. With NORMALIZE_QUEUE_URL set
// (the CDK stack's layout) a valid object is handed to the normalize
// function through that queue; without it, this function also does the
// normalize work (sidecars, index, audit, Instance Stored) in the same pass.
package main

import (
	"context"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/dicom-ingest/dicom-ingest/functions/internal/lambdaio"
)

func main() {
	log := lambdaio.Logger("validate")
	cfg, err := lambdaio.ConfigFromEnv(os.Getenv, "BUCKET", "AUDIT_TABLE", "EVENT_BUS_NAME")
	if err != nil {
		log.Error("configuration", "err", err)
		os.Exit(1)
	}
	var process func(ctx context.Context, key string) error
	if cfg.NormalizeQueueURL != "" {
		p, fwd, err := lambdaio.NewValidator(context.Background(), cfg, log)
		if err != nil {
			log.Error("wiring", "err", err)
			os.Exit(1)
		}
		process = func(ctx context.Context, key string) error {
			res, err := p.ValidateObject(ctx, key)
			if err != nil || !res.Valid {
				return err
			}
			return fwd.Forward(ctx, key)
		}
	} else {
		if cfg.IndexTable == "" {
			log.Error("configuration", "err", "INDEX_TABLE is required without NORMALIZE_QUEUE_URL")
			os.Exit(1)
		}
		p, err := lambdaio.NewPipeline(context.Background(), cfg, log)
		if err != nil {
			log.Error("wiring", "err", err)
			os.Exit(1)
		}
		process = func(ctx context.Context, key string) error {
			_, err := p.ProcessObject(ctx, key)
			return err
		}
	}
	h := &lambdaio.ObjectHandler{Bucket: cfg.Bucket, Logger: log, Process: process}
	lambda.Start(h.Handle)
}
