// Command notify is the scheduled Lambda function that announces studies
// quiet for the quiet period: Study Received, then Study Updated with an
// incremented version when more instances arrive.
package main

import (
	"context"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/dicom-ingest/dicom-ingest/functions/internal/lambdaio"
)

func main() {
	log := lambdaio.Logger("notify")
	cfg, err := lambdaio.ConfigFromEnv(os.Getenv, "INDEX_TABLE", "EVENT_BUS_NAME")
	if err != nil {
		log.Error("configuration", "err", err)
		os.Exit(1)
	}
	p, err := lambdaio.NewPipeline(context.Background(), cfg, log)
	if err != nil {
		log.Error("wiring", "err", err)
		os.Exit(1)
	}
	h := &lambdaio.ScheduleHandler{Tick: p.AnnounceStableStudies, Logger: log}
	lambda.Start(h.Handle)
}
