package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/config"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/filestore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store"
	"github.com/dicom-ingest/dicom-ingest/shared/version"
)

// openStore opens the store --store names: file://DIR or s3://bucket/prefix.
func openStore(ctx context.Context, cfg config.Config, log *slog.Logger, reg prometheus.Registerer) (objectstore.Store, error) {
	switch {
	case strings.HasPrefix(cfg.Store, "file://"):
		s, err := filestore.New(config.StoreDir(cfg.Store), filestore.WithLogger(log))
		if err != nil {
			return nil, fmt.Errorf("open file store: %w", err)
		}
		return s, nil
	case strings.HasPrefix(cfg.Store, "s3://"):
		bucket, prefix, err := s3store.ParseURL(cfg.Store)
		if err != nil {
			return nil, err
		}
		s, err := s3store.New(ctx, s3store.Options{
			Bucket: bucket, Prefix: prefix, PathStyle: cfg.S3PathStyle, KMSKeyID: cfg.S3KMSKey, PartSize: cfg.S3PartSize,
			ImplementationVersion: version.ImplementationVersionName + " " + version.Version,
			Logger:                log, Metrics: reg,
		})
		if err != nil {
			return nil, fmt.Errorf("open S3 store: %w", err)
		}
		return s, nil
	}
	return nil, fmt.Errorf("unsupported store %q", cfg.Store)
}
