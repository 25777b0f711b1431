// Package s3 holds the S3 object store's interop tests: the store through
// the real AWS SDK against an in-process S3 emulator behind a
// fault-injecting proxy, and DCMTK -> scp-task --store s3://... end to end.
package s3
