// Command scp-task is the dicom-ingest C-STORE SCP: it receives associations
// from the sites' PACS and stores every object, durably, before it answers
// success. In AWS it runs on Fargate behind the NLB and stores into S3; with
// --local it also runs the whole ingest pipeline and the portal in-process.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/config"
	"github.com/dicom-ingest/dicom-ingest/shared/cli"
	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog"
)

func main() {
	os.Exit(mainWith(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// mainWith is main with its process: --help and --version answer on
// stdout and exit 0; everything else scp-task says is a JSON log line on
// stderr, a bad setting exiting 2 and a failed start or run 1 (the exit
// statuses of shared/cli).
func mainWith(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := config.Load(args, getenv, stdout)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, config.ErrVersion):
		fmt.Fprintln(stdout, cli.Version("scp-task"))
		return 0
	case err != nil:
		jsonlog.New(stderr, slog.LevelInfo).With("service", "scp-task").Error("scp-task cannot start: bad setting", "err", err)
		return cli.ExitUsage
	}
	log := jsonlog.New(stderr, jsonlog.ParseLevel(cfg.LogLevel)).With("service", "scp-task")
	// On AWS every line names the environment (ENVIRONMENT, as the
	// functions' lines do): the stack's metric filters on this log take it
	// as their Environment dimension.
	if env := getenv("ENVIRONMENT"); env != "" {
		log = log.With(jsonlog.EnvironmentKey, env)
	}
	ctx, hurry, release := notifyStops()
	defer release()
	if err := run(ctx, hurry, cfg, log); err != nil {
		var se startError
		if errors.As(err, &se) {
			log.Error("scp-task cannot start", "err", err)
		} else {
			log.Error("scp-task stopped", "err", err)
		}
		return cli.ExitFailure
	}
	return 0
}

// notifyStops is stopSignals on the process's SIGTERM and SIGINT.
func notifyStops() (ctx, hurry context.Context, release func()) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	return stopSignals(sigs)
}

// stopSignals turns SIGTERM and SIGINT into the two stages of a stop: the
// first ends ctx (drain: in-flight associations may finish within
// --drain-timeout), a second ends hurry (abort them now, as at the drain
// timeout, and stop: a second Ctrl-C of make run's user). Before hurry
// ends, sigs is taken off the signals (signal.Stop), so the next one has
// its default action: a third Ctrl-C ends a stop that hangs (the next
// start reports it as unclean) without a kill -9. release does the same
// and ends the goroutine that waits for the signals.
func stopSignals(sigs chan os.Signal) (ctx, hurry context.Context, release func()) {
	ctx, stop := context.WithCancel(context.Background())
	hurry, stopNow := context.WithCancel(context.Background())
	quit, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		select {
		case <-sigs:
			stop()
		case <-quit:
			return
		}
		select {
		case <-sigs:
			signal.Stop(sigs)
			stopNow()
		case <-quit:
		}
	}()
	return ctx, hurry, func() {
		signal.Stop(sigs)
		close(quit)
		<-ended
	}
}
