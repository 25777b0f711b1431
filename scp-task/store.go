package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/config"
	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/local"
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/filestore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/stagedstore"
	"github.com/dicom-ingest/dicom-ingest/shared/version"
)

// openStore opens the store --store names: file://DIR or s3://bucket/prefix,
// the latter staged through --staging when set.
func openStore(ctx context.Context, cfg config.Config, log *slog.Logger, names *logname.Namer, reg prometheus.Registerer) (objectstore.Store, error) {
	switch {
	case strings.HasPrefix(cfg.Store, "file://"):
		if err := local.RefuseOthersWrite(config.StoreDir(cfg.Store)); err != nil {
			return nil, fmt.Errorf("open file store: %w", err)
		}
		s, err := filestore.New(config.StoreDir(cfg.Store), filestore.WithLogger(log), filestore.WithNames(names),
			filestore.WithMinFreeBytes(uint64(max(cfg.MinFreeBytes, 0))))
		if err != nil {
			return nil, fmt.Errorf("open file store: %w", err)
		}
		warnIfShortOfSpace(ctx, s, log)
		return s, nil
	case strings.HasPrefix(cfg.Store, "s3://"):
		bucket, prefix, err := s3store.ParseURL(cfg.Store)
		if err != nil {
			// It quotes the URL: told without user info and query.
			return nil, logname.RedactURL(err, cfg.Store)
		}
		impl := version.ImplementationVersionName + " " + version.Version
		putTimeout := cfg.S3PutTimeout
		if cfg.StagingDir != "" {
			// The C-STORE is answered once staged; the uploads behind it
			// have nobody waiting, and each request its RetryDeadline.
			putTimeout = 0
		}
		s, err := s3store.New(ctx, s3store.Options{
			Bucket: bucket, Prefix: prefix, PathStyle: cfg.S3PathStyle, KMSKeyID: cfg.S3KMSKey, PartSize: cfg.S3PartSize,
			PutTimeout: putTimeout, ImplementationVersion: impl,
			Logger: log, Names: names, Metrics: reg,
		})
		if err != nil {
			return nil, fmt.Errorf("open S3 store: %w", err)
		}
		if cfg.StagingDir == "" {
			return s, nil
		}
		// Acknowledge once staged (EFS), upload afterwards; see
		// docs/design/staged-store.md for the trade-off.
		if err := local.RefuseOthersWrite(cfg.StagingDir); err != nil {
			return nil, fmt.Errorf("open the staging directory: %w", err)
		}
		staged, err := stagedstore.New(stagedstore.Options{
			Dir: cfg.StagingDir, Uploader: s, MaxBacklogBytes: cfg.StagingMaxBacklog, MaxBacklogAge: cfg.StagingMaxAge, MinFreeBytes: cfg.MinFreeBytes,
			Latencies: cfg.StagingLatency, Names: names, NamePrefix: prefix, Logger: log, Metrics: reg,
			Implementation: impl,
		})
		if err != nil {
			return nil, fmt.Errorf("open the staging directory: %w", err)
		}
		log.Info("staging objects before upload", "dir", cfg.StagingDir, "task_journal", staged.TaskID())
		return staged, nil
	}
	return nil, fmt.Errorf("unsupported store %q", logname.URL(cfg.Store))
}

// logNames returns how logs name objects: by a keyed digest of their key,
// under the key in DICOM_INGEST_LOG_KEY (in AWS, ECS puts the Secrets
// Manager secret there) or, in local mode, the key file in the data
// directory, created on first start. Anywhere else without a key, names
// hold only until the process exits.
func logNames(cfg config.Config, getenv func(string) string, log *slog.Logger) (*logname.Namer, error) {
	n, set, err := logname.FromEnv(getenv)
	switch {
	case err != nil:
		return nil, err
	case set:
		return n, nil
	case cfg.Local:
		if err := local.PrepareDataDir(cfg.DataDir); err != nil {
			return nil, dataDirError(cfg, err)
		}
		n, err := logname.LoadOrCreate(filepath.Join(cfg.DataDir, logname.KeyFile))
		if errors.Is(err, fs.ErrPermission) {
			err = dataDirError(cfg, err)
		}
		return n, err
	}
	log.Warn("no log-name key: object names in logs hold only until this process exits", "env", logname.EnvKey)
	return nil, nil
}

// warnIfShortOfSpace says at the start that a file store's disk is already
// below its reserve (--min-free-bytes), which otherwise shows only as
// associations refused. For file stores alone: another store's Ready is a
// network call.
func warnIfShortOfSpace(ctx context.Context, store objectstore.Store, log *slog.Logger) {
	if err := store.Ready(ctx); errors.Is(err, filestore.ErrReserve) {
		log.Warn("the store's disk is short of free space: associations are refused (02 03 01) until space is freed or --min-free-bytes (SCP_MIN_FREE_BYTES) is lowered",
			"err", err)
	}
}
