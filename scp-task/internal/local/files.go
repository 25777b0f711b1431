package local

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/filestore"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// files gives the pipeline and the portal access to the object directory
// the file store writes (DataDir/objects, one file per key). Metadata the
// pipeline needs comes from the hand-off record the Store wrapper wrote; for
// an object whose hand-off record was lost in a crash it is rebuilt from the
// file itself (File Meta Information, SHA-256, modification time).
type files struct {
	root string
	db   *localstore.DB
	// held is what the SCP handed off with each journaled object: its
	// metadata, size and first bytes (heldView).
	held *heldObjects
	// sums holds the CRC-64/NVME of objects: the file store's, taken as
	// each arrived, and those Head took (checksums).
	sums checksums
}

var (
	_ pipeline.ObjectReader = (*files)(nil)
	_ pipeline.ObjectWriter = (*txFiles)(nil)
	_ pipeline.ObjectLister = (*files)(nil)
)

// path maps a key to its file, refusing anything that could leave root.
// Its errors leave the key out (it holds UIDs): callers name the object.
func (f *files) path(key string) (string, error) {
	if key == "" || strings.HasPrefix(key, "/") || strings.Contains(key, "\\") {
		return "", errors.New("local: unsafe key")
	}
	for _, part := range strings.Split(key, "/") {
		if part == "" || part == "." || part == ".." {
			return "", errors.New("local: unsafe key")
		}
	}
	return filepath.Join(f.root, filepath.FromSlash(key)), nil
}

func notFound(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("local: %w: %w", pipeline.ErrNotFound, err)
	}
	return fmt.Errorf("local: %w", err)
}

// Head reports size and metadata of key.
func (f *files) Head(ctx context.Context, key string) (pipeline.ObjectInfo, error) {
	p, err := f.path(key)
	if err != nil {
		return pipeline.ObjectInfo{}, err
	}
	held, isHeld := f.held.view(key)
	var info pipeline.ObjectInfo
	if isHeld && held.size >= 0 {
		// The SCP placed it a moment ago, and said how big it is.
		info = pipeline.ObjectInfo{Key: key, Size: held.size, LastModified: held.at.UTC()}
	} else {
		st, err := os.Stat(p)
		if err != nil {
			return pipeline.ObjectInfo{}, notFound(err)
		}
		info = pipeline.ObjectInfo{Key: key, Size: st.Size(), LastModified: st.ModTime().UTC()}
	}
	if isCopy(key) {
		_, md, ok, err := f.db.CopyOf(ctx, key)
		if err != nil {
			return info, err
		}
		if ok {
			info.Metadata = md
			return info, nil
		}
	}
	md := held.metadata
	if !isHeld {
		if md, err = f.db.Handoff().Metadata(ctx, key); err != nil {
			return info, err
		}
	}
	if len(md) == 0 && strings.HasSuffix(key, ".dcm") {
		md, err = rebuildMetadata(p, info.LastModified)
		if err != nil {
			return info, err
		}
	}
	if objectstore.LegacySHA256(md) == "" && strings.HasSuffix(key, ".dcm") {
		// The content identity, as S3 reports it: the SCP's file store
		// took the CRC-64/NVME as the object arrived, or else it is taken
		// here. (Objects stored by earlier versions carry a SHA-256 in
		// their metadata instead, which stays their identity; a sha256
		// value in another form is none, objectstore.LegacySHA256, and
		// without the CRC such an object was named by its ETag, which the
		// file store does not give: an identity that changed.)
		sum, ok := f.sums.load(key)
		if !ok {
			if sum, err = filestore.FileCRC64NVME(ctx, p); err != nil {
				return info, notFound(fmt.Errorf("checksum %s: %w", filepath.Base(p), err))
			}
			f.sums.keep(key, sum)
		}
		info.ChecksumCRC64NVME = sum
	}
	info.Metadata = md
	return info, nil
}

// Exists reports whether key is stored, without Head's checksum.
func (f *files) Exists(_ context.Context, key string) (bool, error) {
	p, err := f.path(key)
	if err != nil {
		return false, err
	}
	switch _, err := os.Stat(p); {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("local: %w", err)
	}
}

// rebuildMetadata derives what it can from the stored file when the SCP's
// own record of the transaction was lost: the calling AE (the Sending AE
// Title, or in a file written before it the Source AE Title: SenderAE), the
// called AE (the Receiving AE Title, in files that have it), UIDs and
// transfer syntax from the File Meta Information (Head adds the checksum).
// Peer and association id are unknown.
func rebuildMetadata(path string, mtime time.Time) (map[string]string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, notFound(err)
	}
	defer fh.Close()
	md := map[string]string{objectstore.MetaReceivedAt: mtime.UTC().Format(time.RFC3339Nano), objectstore.MetaRecovered: "true"}
	if m, err := part10.ReadMeta(bufio.NewReader(fh)); err == nil {
		md[objectstore.MetaCallingAE] = m.SenderAE()
		if m.ReceivingApplicationEntityTitle != "" {
			md[objectstore.MetaCalledAE] = m.ReceivingApplicationEntityTitle
		}
		md[objectstore.MetaSOPClassUID] = m.MediaStorageSOPClassUID
		md[objectstore.MetaSOPInstanceUID] = m.MediaStorageSOPInstanceUID
		md[objectstore.MetaTransferSyntaxUID] = m.TransferSyntaxUID
	}
	return md, nil
}

// isCopy reports whether key may name a copy whose metadata the
// database records: txFiles.Copy makes copies only under quarantine/, so
// Head of any other key (every incoming object the pipeline reads) skips
// the lookup.
func isCopy(key string) bool { return strings.HasPrefix(key, pipeline.QuarantinePrefix) }

// isDocument reports whether key names one of the pipeline's documents,
// which local mode keeps in the database (see txFiles.Put).
func isDocument(key string) bool {
	return strings.HasSuffix(key, ".json") &&
		(strings.HasPrefix(key, pipeline.MetadataPrefix) || strings.HasPrefix(key, pipeline.QuarantinePrefix))
}

// OpenRange streams length bytes of key from offset (length < 0: to EOF).
// A document is read from the database, or else from a file: data
// directories written before documents moved there hold them as files.
func (f *files) OpenRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	p, err := f.path(key)
	if err != nil {
		return nil, err
	}
	if isDocument(key) {
		body, _, err := f.db.Document(ctx, key)
		switch {
		case err == nil:
			body = body[min(offset, int64(len(body))):]
			if length >= 0 {
				body = body[:min(length, int64(len(body)))]
			}
			return io.NopCloser(bytes.NewReader(body)), nil
		case !errors.Is(err, pipeline.ErrNotFound):
			return nil, err
		}
	}
	if held, ok := f.held.view(key); ok {
		if b, ok := held.bytes(offset, length); ok {
			return io.NopCloser(bytes.NewReader(b)), nil
		}
	}
	fh, err := os.Open(p)
	if err != nil {
		return nil, notFound(err)
	}
	// Only a regular file is an object: a key naming a directory of the
	// store (objects/incoming/2026) is not found, not an empty object.
	if st, err := fh.Stat(); err != nil || !st.Mode().IsRegular() {
		_ = fh.Close() // opened only to be looked at
		if err == nil {
			err = fmt.Errorf("local: %s: %w", key, pipeline.ErrNotFound)
		}
		return nil, err
	}
	if length >= 0 {
		noReadahead(fh)
	}
	if _, err := fh.Seek(offset, io.SeekStart); err != nil {
		_ = fh.Close()
		return nil, fmt.Errorf("local: seek %s: %w", key, err)
	}
	if length < 0 {
		return fh, nil
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(fh, length), fh}, nil
}

// Open streams a whole object (the portal's raw and metadata links).
func (f *files) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	return f.OpenRange(ctx, key, 0, -1)
}

// writeFile writes body to key atomically: temporary file, fsync, rename,
// fsync of the directory. The same content written twice is the same file.
// The temporary file is in the file store's temporary directory
// (filestore.TempDir, on the same file system), which filestore.New
// empties at each start: a write cut short by a kill leaves nothing there
// for good. It was beside its file, where no start looked.
func (f *files) writeFile(key string, body io.Reader) error {
	p, err := f.path(key)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("local: write %s: %w", key, err)
	}
	tmpDir := filepath.Join(f.root, filestore.TempDir)
	if err := os.MkdirAll(tmpDir, 0o750); err != nil {
		return fmt.Errorf("local: write %s: %w", key, err)
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(tmpDir, "local-"+hex.EncodeToString(rnd[:])+".tmp")
	fh, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("local: write %s: %w", key, err)
	}
	_, err = io.Copy(fh, body)
	if err == nil {
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		if rerr := os.Remove(tmp); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
		return fmt.Errorf("local: write %s: %w", key, err)
	}
	if err := filestore.SyncDir(dir); err != nil {
		return fmt.Errorf("local: write %s: sync directory: %w", key, err)
	}
	return nil
}

// txFiles is the pipeline's ObjectWriter for one unit of work: files are
// written at once (idempotently: same key, same content), the copy's
// metadata goes into the unit's transaction.
type txFiles struct {
	*files
	tx *localstore.Tx
}

// Put stores a small document (sidecar, findings) in the unit's
// transaction: it is durable with the unit's commit.
func (w *txFiles) Put(ctx context.Context, key string, body []byte, contentType string, _ map[string]string) error {
	if !isDocument(key) {
		return fmt.Errorf("local: put %s: the pipeline writes only JSON documents under metadata/ and quarantine/", key)
	}
	if _, err := w.path(key); err != nil {
		return err
	}
	return w.tx.PutDocument(ctx, key, contentType, body, time.Now())
}

// Copy copies src to dst (quarantine), recording dst's metadata. It needs
// no pin to src's version (src.ETag): the files it copies, the SCP's, are
// never replaced.
func (w *txFiles) Copy(ctx context.Context, src pipeline.ObjectInfo, dst string, metadata map[string]string) error {
	if !isCopy(dst) {
		return fmt.Errorf("local: copy to %s: the pipeline copies only into quarantine/", dst)
	}
	info, err := w.Head(ctx, src.Key)
	if err != nil {
		return err
	}
	rc, err := w.OpenRange(ctx, src.Key, 0, -1)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := w.writeFile(dst, rc); err != nil {
		return err
	}
	md := map[string]string{}
	for k, v := range info.Metadata {
		md[k] = v
	}
	for k, v := range metadata {
		md[k] = v
	}
	return w.tx.RecordCopy(ctx, src.Key, dst, md, time.Now())
}

// resultFiles is the commitment worker's ObjectWriter: it writes the
// results of Storage Commitment transactions and nothing else.
type resultFiles struct{ *files }

// Put writes a result document.
func (w resultFiles) Put(_ context.Context, key string, body []byte, _ string, _ map[string]string) error {
	if !strings.HasPrefix(key, pipeline.CommitmentResultsPrefix) {
		return fmt.Errorf("local: put %s: the commitment worker writes only under %s", key, pipeline.CommitmentResultsPrefix)
	}
	return w.writeFile(key, strings.NewReader(string(body)))
}

// Copy is refused: the commitment worker copies nothing.
func (w resultFiles) Copy(_ context.Context, _ pipeline.ObjectInfo, dst string, _ map[string]string) error {
	return fmt.Errorf("local: copy to %s: the commitment worker copies nothing", dst)
}
