package pipelinee2e

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
)

// TestChainSameContentPinned: a data set delivered under another key
// than an object indexed under its whole file's CRC-64/NVME (a version
// before data set identities) is compared with it through the indexed
// object's meta header, read, as every read of the validate function is,
// pinned to the ETag of its HEAD. Overwritten between that HEAD and the
// read (overwriteOnRead), the read fails, 412, and so does the message:
// nothing indexed, audited or announced. Unpinned, the new version's meta
// header was combined with the indexed object's CRC and size. Redelivered,
// the key's HEAD shows other bytes than those indexed: not the same
// content, a conflict.
func TestChainSameContentPinned(t *testing.T) {
	srv := s3test.NewServer(t, bucket) // S3's full-object CRC-64/NVME, as the SCP's objects carry it
	e := newEnvS3(t, "1s", srv.URL)
	s := e.newStudy(1)
	first, resent, overwrite := s.instance(1, 1), s.instance(1, 1), s.instance(1, 1)
	first.SourceAE, resent.SourceAE, overwrite.SourceAE = "MODALITY1", "VNA_FORWARDER", "SOMEONE_ELSE"
	received := time.Date(2026, 1, 15, 10, 20, 30, 0, time.UTC)
	ctx := context.Background()
	put := func(key string, in pt.Instance, at time.Time) (string, string) {
		t.Helper()
		data := in.Build()
		md := pt.SCPMetadata(pt.CTStorage, in.SOPUID, "1.2.840.10008.1.2.1", "")
		delete(md, objectstore.MetaLegacySHA256)
		md[objectstore.MetaReceivedAt] = at.Format(time.RFC3339Nano)
		if _, err := e.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: strings.NewReader(string(data)),
			Metadata: md, ChecksumAlgorithm: s3types.ChecksumAlgorithmCrc64nvme}); err != nil {
			t.Fatalf("put: %v", err)
		}
		h, err := e.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), ChecksumMode: s3types.ChecksumModeEnabled})
		if err != nil {
			t.Fatal(err)
		}
		crc, err := base64.StdEncoding.DecodeString(aws.ToString(h.ChecksumCRC64NVME))
		if err != nil || len(crc) != 8 {
			t.Fatalf("the object's CRC-64/NVME %q: %v", aws.ToString(h.ChecksumCRC64NVME), err)
		}
		return fmt.Sprintf("crc64nvme-%016x", binary.BigEndian.Uint64(crc)), s3Notification(key, len(data))
	}
	held := s.key(first, "")
	whole, _ := put(held, first, received)
	rec := pt.Record(1, 1, 1, whole, 0)
	rec.StudyInstanceUID, rec.SeriesInstanceUID, rec.SOPInstanceUID = first.StudyUID, first.SeriesUID, first.SOPUID
	rec.ObjectKey, rec.Size = held, int64(len(first.Build()))
	if _, err := e.index.UpsertInstance(ctx, rec); err != nil {
		t.Fatal(err)
	}
	_, note := put(strings.Replace(held, "2026/01/15", "2026/01/16", 1), resent, received.Add(24*time.Hour))

	u, err := url.Parse(e.s3URL)
	if err != nil {
		t.Fatal(err)
	}
	o := &overwriteOnRead{next: httputil.NewSingleHostReverseProxy(u), key: held,
		put: func() { put(held, overwrite, received.Add(25*time.Hour)) },
		etag: func() string {
			h, err := e.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(held)})
			if err != nil {
				t.Errorf("head: %v", err)
				return ""
			}
			return aws.ToString(h.ETag)
		}}
	proxy := httptest.NewServer(o)
	t.Cleanup(proxy.Close)
	e.startFunction(e.rie, "validate-held-overwritten", "validate", "AWS_ENDPOINT_URL_S3="+proxy.URL)

	before := s.state(t)
	if got := e.invokeFailures(t, "validate-held-overwritten", sqsEvent(note)); len(got) != 1 {
		t.Errorf("failures %v: want the message failed, the indexed object's read refused across its overwrite", got)
	}
	if d := s.state(t); d.Revision != before.Revision || len(d.Audit) != len(before.Audit) || len(d.Events) != len(before.Events) {
		t.Errorf("after the refused read: state %+v, want %+v", d, before)
	}
	e.invokeBatch(t, "validate", sqsEvent(note))
	if got := s.state(t); got.Instances != 1 || got.Conflicts != 1 || len(got.Contents) != 2 {
		t.Errorf("redelivered: state %+v; want the indexed content and a conflict (its key holds other bytes now)", got)
	}
	page, err := e.audit.Query(ctx, pipeline.AuditQuery{StudyInstanceUID: s.uid, Outcome: pipeline.OutcomeConflict})
	if err != nil || len(page.Records) != 1 || page.Records[0].HeldContentIdentity != whole {
		t.Errorf("conflict records %+v, %v; want one naming the indexed content", page.Records, err)
	}
}
