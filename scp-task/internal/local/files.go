package local

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
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
}

var (
	_ pipeline.ObjectReader = (*files)(nil)
	_ pipeline.ObjectWriter = (*txFiles)(nil)
)

// path maps a key to its file, refusing anything that could leave root.
func (f *files) path(key string) (string, error) {
	if key == "" || strings.HasPrefix(key, "/") || strings.Contains(key, "\\") {
		return "", fmt.Errorf("local: unsafe key %q", key)
	}
	for _, part := range strings.Split(key, "/") {
		if part == "" || part == "." || part == ".." {
			return "", fmt.Errorf("local: unsafe key %q", key)
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
	st, err := os.Stat(p)
	if err != nil {
		return pipeline.ObjectInfo{}, notFound(err)
	}
	info := pipeline.ObjectInfo{Key: key, Size: st.Size(), LastModified: st.ModTime().UTC()}
	if _, md, ok, err := f.db.CopyOf(ctx, key); err != nil {
		return info, err
	} else if ok {
		info.Metadata = md
		return info, nil
	}
	md, err := f.db.Handoff().Metadata(ctx, key)
	if err != nil {
		return info, err
	}
	if len(md) == 0 && strings.HasSuffix(key, ".dcm") {
		md, err = rebuildMetadata(p, st.ModTime())
		if err != nil {
			return info, err
		}
	}
	if md["sha256"] == "" && strings.HasSuffix(key, ".dcm") {
		// The file store does not hash on the C-STORE's path: the
		// content's identity is taken here, where the pipeline first
		// reads the object.
		sum, err := filestore.FileSHA256(p)
		if err != nil {
			return info, notFound(fmt.Errorf("checksum %s: %w", filepath.Base(p), err))
		}
		md = maps.Clone(md)
		md["sha256"] = sum
	}
	info.Metadata = md
	info.ETag = md["sha256"]
	return info, nil
}

// rebuildMetadata derives what it can from the stored file when the SCP's
// own record of the transaction was lost: the calling AE (Source AE title),
// UIDs and transfer syntax from the File Meta Information (Head adds the
// checksum). Called AE, peer and association id are unknown.
func rebuildMetadata(path string, mtime time.Time) (map[string]string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, notFound(err)
	}
	defer fh.Close()
	md := map[string]string{"received-at": mtime.UTC().Format(time.RFC3339Nano), "recovered": "true"}
	if m, err := part10.ReadMeta(bufio.NewReader(fh)); err == nil {
		md["calling-ae"] = m.SourceApplicationEntityTitle
		md["sop-class-uid"] = m.MediaStorageSOPClassUID
		md["sop-instance-uid"] = m.MediaStorageSOPInstanceUID
		md["transfer-syntax-uid"] = m.TransferSyntaxUID
	}
	return md, nil
}

// OpenRange streams length bytes of key from offset (length < 0: to EOF).
func (f *files) OpenRange(_ context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	p, err := f.path(key)
	if err != nil {
		return nil, err
	}
	fh, err := os.Open(p)
	if err != nil {
		return nil, notFound(err)
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

// List returns the keys under prefix whose names end in suffix, skipping
// the file store's temporary files (dot files and *.tmp).
func (f *files) List(prefix, suffix string) ([]string, error) {
	dir, err := f.path(strings.TrimSuffix(prefix, "/"))
	if err != nil {
		return nil, err
	}
	var keys []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		name := d.Name()
		if d.IsDir() || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".tmp") || !strings.HasSuffix(name, suffix) || !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(f.root, p)
		if err != nil {
			return err
		}
		keys = append(keys, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("local: list %s: %w", prefix, err)
	}
	return keys, nil
}

// writeFile writes body to key atomically: temporary file, fsync, rename,
// fsync of the directory. The same content written twice is the same file.
func (f *files) writeFile(key string, body io.Reader) error {
	p, err := f.path(key)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("local: write %s: %w", key, err)
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(dir, "."+filepath.Base(p)+"."+hex.EncodeToString(rnd[:])+".tmp")
	fh, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
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

// Put writes a small document (sidecar, findings).
func (w *txFiles) Put(_ context.Context, key string, body []byte, _ string, _ map[string]string) error {
	if !strings.HasPrefix(key, pipeline.MetadataPrefix) && !strings.HasPrefix(key, pipeline.QuarantinePrefix) {
		return fmt.Errorf("local: put %s: the pipeline writes only under metadata/ and quarantine/", key)
	}
	return w.writeFile(key, strings.NewReader(string(body)))
}

// Copy copies src to dst (quarantine), recording dst's metadata.
func (w *txFiles) Copy(ctx context.Context, src, dst string, metadata map[string]string) error {
	if !strings.HasPrefix(dst, pipeline.QuarantinePrefix) {
		return fmt.Errorf("local: copy to %s: the pipeline copies only into quarantine/", dst)
	}
	info, err := w.Head(ctx, src)
	if err != nil {
		return err
	}
	rc, err := w.OpenRange(ctx, src, 0, -1)
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
	return w.tx.RecordCopy(ctx, src, dst, md, time.Now())
}
