// Package ingest is scp-task's C-STORE handler: it peeks at the head of each
// arriving dataset for its identifiers, checks them against the command,
// prefixes the File Meta Information and streams the Part 10 file into the
// object store, answering success only once the store says it is durable.
package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
	"github.com/dicom-ingest/dicom-ingest/shared/version"
)

// maxHeaderBytes bounds how much of a dataset is held while its identifiers
// are looked for; they sit in groups 0008 and 0020, far below this.
const maxHeaderBytes = 256 << 10

// Options tune a Handler.
type Options struct {
	Logger *slog.Logger
	// Now stamps ReceivedAt; tests may fix it. Default time.Now.
	Now func() time.Time
}

// Handler stores every C-STORE dataset in a Store.
type Handler struct {
	store objectstore.Store
	log   *slog.Logger
	now   func() time.Time
}

var _ dicomnet.Handler = (*Handler)(nil)

// New returns a Handler storing into store.
func New(store objectstore.Store, opts Options) *Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Handler{store: store, log: opts.Logger, now: opts.Now}
}

// ServeCStore implements dicomnet.Handler.
func (h *Handler) ServeCStore(ctx context.Context, req *dicomnet.CStoreRequest, data io.Reader) error {
	received := h.now()
	log := h.log.With("association", req.Association.ID, "message_id", req.MessageID)

	_, known := dataset.EncodingOf(req.TransferSyntaxUID)
	hdr, body, err := dataset.Peek(data, req.TransferSyntaxUID, dataset.DropGroup0002(), dataset.WithMaxHeaderBytes(maxHeaderBytes))
	if err != nil {
		// The association broke while the header arrived: nobody is left
		// to answer, and nothing was stored.
		return fmt.Errorf("ingest: read dataset header: %w", err)
	}
	if known {
		if st, bad := checkIdentifiers(req, hdr); bad {
			log.Warn("C-STORE refused", "status", fmt.Sprintf("%04X", st.Code), "reason", st.Comment)
			return st
		}
	}
	// A private or unknown transfer syntax cannot be parsed: the object is
	// stored under the command's UIDs and validation decides about it later.
	obj := objectstore.Object{
		SOPClassUID:       req.AffectedSOPClassUID,
		SOPInstanceUID:    req.AffectedSOPInstanceUID,
		StudyInstanceUID:  hdr.StudyInstanceUID,
		SeriesInstanceUID: hdr.SeriesInstanceUID,
		TransferSyntaxUID: req.TransferSyntaxUID,
		CallingAE:         req.Association.CallingAE,
		CalledAE:          req.Association.CalledAE,
		AssociationID:     req.Association.ID,
		ReceivedAt:        received,
	}
	if a := req.Association.RemoteAddr; a != nil {
		obj.PeerAddr = a.String()
	}
	if _, err := objectstore.Key(obj); err != nil {
		return dimse.Status{Code: dimse.StatusCannotUnderstand, Comment: "Affected SOP Instance UID is not a valid UID"}
	}
	meta := part10.Meta{
		MediaStorageSOPClassUID:      req.AffectedSOPClassUID,
		MediaStorageSOPInstanceUID:   req.AffectedSOPInstanceUID,
		TransferSyntaxUID:            req.TransferSyntaxUID,
		ImplementationClassUID:       version.ImplementationClassUID,
		ImplementationVersionName:    version.ImplementationVersionName,
		SourceApplicationEntityTitle: req.Association.CallingAE,
	}
	if err := meta.Validate(); err != nil {
		return dimse.Status{Code: dimse.StatusCannotUnderstand, Comment: "SOP Class UID or transfer syntax UID is not a valid UID"}
	}
	part10File := io.MultiReader(bytes.NewReader(part10.AppendHeader(nil, meta)), body)
	stored, err := h.store.Put(ctx, obj, part10File)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("ingest: store abandoned: %w", err)
		}
		log.Error("store failed", "err", err)
		return dimse.Status{Code: dimse.StatusOutOfResources, Comment: "storage failed, please retry"}
	}
	log.Debug("stored", "key", stored.Key, "bytes", stored.Size, "duplicate", stored.Duplicate, "conflict", stored.Conflict)
	if stored.Conflict {
		log.Warn("different content resent for an already stored instance: kept beside it", "key", stored.Key)
	}
	if hdr.Group0002Dropped {
		return dimse.Status{Code: dimse.StatusElementsDiscarded, Comment: "group 0002 elements in the dataset were discarded"}
	}
	return nil
}

// checkIdentifiers compares the dataset's SOP Class and Instance UIDs with
// the command's.
func checkIdentifiers(req *dicomnet.CStoreRequest, hdr dataset.Header) (dimse.Status, bool) {
	switch {
	case hdr.SOPInstanceUID == "" || hdr.SOPClassUID == "":
		if hdr.Err != nil && !errors.Is(hdr.Err, dataset.ErrHeaderTooLong) {
			return dimse.Status{Code: dimse.StatusCannotUnderstand, Comment: "dataset cannot be parsed"}, true
		}
		return dimse.Status{Code: dimse.StatusCannotUnderstand, Comment: "dataset lacks SOP Class or SOP Instance UID"}, true
	case hdr.SOPInstanceUID != req.AffectedSOPInstanceUID:
		return dimse.Status{Code: dimse.StatusDataSetDoesNotMatchSOPClass, Comment: "dataset SOP Instance UID differs from the command's"}, true
	case hdr.SOPClassUID != req.AffectedSOPClassUID:
		return dimse.Status{Code: dimse.StatusDataSetDoesNotMatchSOPClass, Comment: "dataset SOP Class UID differs from the command's"}, true
	}
	return dimse.Status{}, false
}
