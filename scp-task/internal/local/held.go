package local

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
)

// The hand-off of a journaled object (nearly every image: see filestore's
// journal) is its journal record. The record, written and committed with
// the object's bytes by the one fdatasync a C-STORE waits for, carries the
// SCP's metadata as its note, and the file store keeps it until the
// pipeline's outcome for the key is durable: the pipeline's commit that
// marks the key done (or a durable queue row, see spill) releases it.
// After a crash the file store replays every record not yet checkpointed
// and hands it back (filestore.WithReplayHeld), and the key is handed off
// again: a key done already is settled without processing, one that is
// not is processed, exactly once, as the ledger decides. So a C-STORE
// costs no SQLite statement and no sync beyond the file store's own.
//
// Objects the file store writes by its file recipe (larger than its ring)
// and association records keep the durable queue row written before the
// object takes its key.

// heldObject is a journaled object handed to the pipeline, its record
// held.
type heldObject struct {
	handed  localstore.Handed
	release func() // the record's
	busy    bool   // a worker has it, or it is being spilled
	// size is the object's size, head its first bytes (see heldHead);
	// both unknown (-1, nil) for a record a restart replayed.
	size int64
	head []byte
}

// heldHead is how much of a held object's start is kept in memory, from
// its Put until a worker has processed it: the pipeline's first read of
// an object (its header, up to the pixel data) is of this many bytes, and
// so is served from memory instead of by a stat, an open and a read of
// the file the SCP wrote a moment before. maxHeldHeads bounds the memory
// all heads take (a backlog of 256 objects); past it, objects are read
// from their files.
const (
	heldHead     = 32 << 10
	maxHeldHeads = 8 << 20
)

// heldObjects are the keys whose journal records the pipeline holds.
type heldObjects struct {
	mu    sync.Mutex
	m     map[string]*heldObject
	heads int // bytes of the heads kept
}

func newHeldObjects() *heldObjects { return &heldObjects{m: map[string]*heldObject{}} }

// add holds key's record; object is the object's bytes (valid during the
// call only), nil for a record a restart replayed. A key held already (a
// replay of a record whose key a later Put holds too) keeps its first
// record and releases this one.
func (h *heldObjects) add(handed localstore.Handed, object []byte, release func()) {
	h.mu.Lock()
	if _, ok := h.m[handed.Key]; ok {
		h.mu.Unlock()
		release()
		return
	}
	o := &heldObject{handed: handed, release: release, size: -1}
	if object != nil {
		o.size = int64(len(object))
		if n := min(len(object), heldHead); h.heads+n <= maxHeldHeads {
			o.head = bytes.Clone(object[:n])
			h.heads += n
		}
	}
	h.m[handed.Key] = o
	h.mu.Unlock()
}

// claim marks key as taken by a worker and returns what was handed off
// with it: nil when its record is not held (its hand-off is a queue row);
// retry is set when it is held but being spilled.
func (h *heldObjects) claim(key string) (handed *localstore.Handed, retry bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	o, ok := h.m[key]
	switch {
	case !ok:
		return nil, false
	case o.busy:
		return nil, true
	}
	o.busy = true
	c := o.handed
	return &c, false
}

// unclaim gives key back after a failed attempt.
func (h *heldObjects) unclaim(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if o, ok := h.m[key]; ok {
		o.busy = false
	}
}

// heldView is what local mode knows of a held object without reading its
// file: what the SCP knew of it, when it was handed off, and, unless a
// restart replayed it, its size and first bytes (head: never changed,
// shared with the other views).
type heldView struct {
	metadata map[string]string
	at       time.Time
	size     int64
	head     []byte
}

// view returns what is known of key, if its record is held.
func (h *heldObjects) view(key string) (heldView, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	o, ok := h.m[key]
	if !ok {
		return heldView{}, false
	}
	return heldView{metadata: o.handed.Metadata, at: o.handed.At, size: o.size, head: o.head}, true
}

// dropHead lets key's head go once the pipeline has read what it needs:
// the record stays held until the outcome is durable, its head need not.
func (h *heldObjects) dropHead(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if o, ok := h.m[key]; ok {
		h.forgetHead(o)
	}
}

// forgetHead gives o's head back to the bound; the caller holds mu.
func (h *heldObjects) forgetHead(o *heldObject) {
	h.heads -= len(o.head)
	o.head = nil
}

// bytes returns length bytes of the object from offset (length < 0: to
// its end), as a read of its file would, if its head holds them.
func (v heldView) bytes(offset, length int64) ([]byte, bool) {
	if v.head == nil || offset < 0 || offset > v.size {
		return nil, false
	}
	end := v.size
	if length >= 0 {
		end = min(offset+length, v.size)
	}
	if end > int64(len(v.head)) {
		return nil, false
	}
	return v.head[offset:end], true
}

// release lets key's record go: the pipeline's outcome for it is durable.
func (h *heldObjects) release(key string) {
	h.mu.Lock()
	o, ok := h.m[key]
	if ok {
		delete(h.m, key)
		h.forgetHead(o)
	}
	h.mu.Unlock()
	if ok {
		o.release()
	}
}

// count returns how many records are held.
func (h *heldObjects) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.m)
}

// spillAfter is how long a record may be held by a key no worker has:
// one waiting for a retry, or a backlog. Then its hand-off moves to a
// durable queue row and the record goes, so that a pipeline that fails or
// lags never fills the journal (8 segments of 16 MiB, about a second of
// the SCP's fastest writes) and holds up the SCP. The pipeline's usual
// lag is tens of milliseconds.
const spillAfter = 500 * time.Millisecond

// spill moves the hand-off of every key held longer than age, and not
// taken by a worker, to the queue (see toQueue). It returns how many it
// moved.
func (h *heldObjects) spill(ctx context.Context, handoff *localstore.Handoff, age time.Duration, now time.Time) (int, error) {
	var keys []localstore.Handed
	h.mu.Lock()
	for _, o := range h.m {
		if !o.busy && now.Sub(o.handed.At) >= age {
			o.busy = true
			keys = append(keys, o.handed)
		}
	}
	h.mu.Unlock()
	if len(keys) == 0 {
		return 0, nil
	}
	if err := h.toQueue(ctx, handoff, keys); err != nil {
		return 0, err
	}
	return len(keys), nil
}

// toQueue moves the hand-off of keys, held and taken (claim or spill), to
// the queue: their rows committed and synced first, then their records
// released. On an error they stay held, and are given back.
func (h *heldObjects) toQueue(ctx context.Context, handoff *localstore.Handoff, keys []localstore.Handed) error {
	if _, err := handoff.EnqueueAll(ctx, keys); err != nil {
		for _, k := range keys {
			h.unclaim(k.Key)
		}
		return err
	}
	for _, k := range keys {
		h.release(k.Key)
	}
	return nil
}

// handedBack is the file store's WithReplayHeld callback: it collects the
// records a restart replays, to be handed off again once the database is
// open.
type handedBack struct {
	log   *slog.Logger
	names *logname.Namer
	at    time.Time
	recs  []heldRecord
}

type heldRecord struct {
	handed  localstore.Handed
	release func()
}

func (b *handedBack) add(key string, note []byte, release func()) {
	handed := localstore.Handed{Key: key, At: b.at, Metadata: map[string]string{}}
	if len(note) > 0 {
		if err := json.Unmarshal(note, &handed.Metadata); err != nil {
			// The record's object is intact (its payload is checked);
			// the pipeline rebuilds what it can from the object.
			b.log.Warn("a replayed object's hand-off note is unreadable; its metadata is rebuilt from the object", "object", b.names.Key(key), "err", err)
			handed.Metadata = map[string]string{}
		} else {
			handed.MetadataJSON = bytes.Clone(note)
		}
	}
	b.recs = append(b.recs, heldRecord{handed: handed, release: release})
}
