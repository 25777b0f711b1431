// Command commitment is the Lambda function of Storage Commitment: it
// registers each request the SCP made durable under commitment/requests/
// (SQS, from the bucket's notifications), evaluates it against the index,
// the bucket and the audit trail, and reports the result to the requesting
// PACS on an association it opens through the site's VPN; every minute it
// also moves on the transactions still waiting for instances or for a
// delivery retry.
package main

import (
	"context"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/dicom-ingest/dicom-ingest/functions/internal/lambdaio"
)

func main() {
	log := lambdaio.Logger("commitment")
	cfg, err := lambdaio.ConfigFromEnv(os.Getenv, "BUCKET", "BUCKET_ARN", "AUDIT_TABLE", "INDEX_TABLE", "EVENT_BUS_NAME", "AE_TITLE")
	if err != nil {
		log.Error("configuration", "err", err)
		os.Exit(1)
	}
	p, err := lambdaio.NewCommitment(context.Background(), cfg, log)
	if err != nil {
		log.Error("wiring", "err", err)
		os.Exit(1)
	}
	h := &lambdaio.CommitmentHandler{
		Requests: &lambdaio.ObjectHandler{Bucket: cfg.Bucket, Logger: log, Process: p.ProcessCommitmentRequest},
		Run:      p.RunCommitments,
		Pending: func(ctx context.Context, before time.Time) (bool, error) {
			due, err := p.Commitments.DueCommitments(ctx, before, 1)
			return len(due) > 0, err
		},
		Logger: log,
	}
	lambda.Start(h.Handle)
}
