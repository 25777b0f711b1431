// Package ingest is scp-task's C-STORE handler: it peeks at the head of each
// arriving dataset for its identifiers, checks them against the command,
// prefixes the File Meta Information and streams the Part 10 file into the
// object store, answering success only once the store says it is durable.
//
// The dataset streams through a dataset.Inspector, the same element
// reader the pipeline validates with, under the same limits: a dataset it
// cannot read to its last byte (one that ends inside an element's declared
// length, overruns an item, cannot be followed, or exceeds a limit) is
// answered with a C000-family failure and nothing is stored. Storing it
// would acknowledge an object the archive cannot use while the sender,
// told it succeeded, may delete its copy (PS3.4 B.2.3: "Cannot
// understand" is the failure for a dataset the SCP cannot parse).
package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
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

// Failure statuses for datasets the reader refuses (PS3.4 B.2.3: C000-CFFF
// "Cannot understand"), one per verdict so that the sender's log and our
// audit record say which.
const (
	// StatusUnreadable: the dataset's structure cannot be followed, or it
	// lacks the SOP Class or Instance UID.
	StatusUnreadable uint16 = dimse.StatusCannotUnderstand
	// StatusTruncated: the dataset ends inside an element, item or
	// sequence (a value declared longer than what was sent).
	StatusTruncated uint16 = 0xC001
	// StatusOverLimit: the dataset exceeds the reader's limits (nesting
	// depth, element count, header values).
	StatusOverLimit uint16 = 0xC002
)

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

// ObjectRefused is the error of a C-STORE refused, or failed, once its
// data set's header was read: its status, and the study and series the
// header named, for the audit record (a C-STORE refused for a cut-short
// pixel data was audited without them, so its study never showed it). Its
// message is the status's and names no UID: it reaches the log.
type ObjectRefused struct {
	Status                              dimse.Status
	StudyInstanceUID, SeriesInstanceUID string
}

func (e *ObjectRefused) Error() string { return e.Status.Error() }
func (e *ObjectRefused) Unwrap() error { return e.Status }

// CutShort is the error of a C-STORE whose data set the association's end
// broke off (or the SCP's own abort abandoned) once its header was read:
// nothing stored, nothing answered. It carries the study and series the
// header named, for the audit record, so that the study's page lists the
// C-STORE cut short (its record named no study, and no page showed it).
// Its message is Err's, which names no UID: it reaches the log.
type CutShort struct {
	StudyInstanceUID, SeriesInstanceUID string
	Err                                 error
}

func (e *CutShort) Error() string { return e.Err.Error() }
func (e *CutShort) Unwrap() error { return e.Err }

// HeaderNamed is the study and series that the header of a C-STORE which
// failed once its header was read named (err holds an ObjectRefused or a
// CutShort); empty when its header was not read.
func HeaderNamed(err error) (study, series string) {
	var refused *ObjectRefused
	if errors.As(err, &refused) {
		return refused.StudyInstanceUID, refused.SeriesInstanceUID
	}
	var cut *CutShort
	if errors.As(err, &cut) {
		return cut.StudyInstanceUID, cut.SeriesInstanceUID
	}
	return "", ""
}

// AlreadyHeld is the result of a C-STORE whose object the store already
// held, byte for byte, under its key (objectstore.Stored.Duplicate): it
// succeeded with Status (success, or B006), and nothing new was written,
// so no object notification follows. It travels as the handler's error,
// as a warning status does, so that the audit writer records the
// transfer (associationaudit.EventDuplicate), with the key of the object
// held and the study and series the header named. Its message names no
// UID: it reaches the log.
type AlreadyHeld struct {
	Status                                   dimse.Status
	Key, StudyInstanceUID, SeriesInstanceUID string
}

func (e *AlreadyHeld) Error() string { return "ingest: identical object already held" }
func (e *AlreadyHeld) Unwrap() error { return e.Status }

// ServeCStore implements dicomnet.Handler.
func (h *Handler) ServeCStore(ctx context.Context, req *dicomnet.CStoreRequest, data io.Reader) error {
	received := h.now()
	log := h.log.With("association", req.Association.ID, "message_id", req.MessageID)

	in := dataset.NewInspector(data, req.TransferSyntaxUID, dataset.DropGroup0002(), dataset.WithMaxHeaderBytes(maxHeaderBytes))
	body, err := in.Peek()
	if err != nil {
		// The association broke while the header arrived: nobody is left
		// to answer, and nothing was stored.
		return fmt.Errorf("ingest: read dataset header: %w", err)
	}
	hdr := in.Header()
	named := func(st dimse.Status) error {
		return &ObjectRefused{Status: st, StudyInstanceUID: hdr.StudyInstanceUID, SeriesInstanceUID: hdr.SeriesInstanceUID}
	}
	if st, bad := refusal(req, hdr, in.Err()); bad {
		log.Warn("C-STORE refused", "status", fmt.Sprintf("%04X", st.Code), "reason", st.Comment)
		return named(st)
	}
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
		TLS:               associationaudit.NamedPeer(req.Association.PeerCertificateName, req.Association.PeerIdentity),
	}
	if a := req.Association.RemoteAddr; a != nil {
		obj.PeerAddr = a.String()
	}
	if _, err := objectstore.Key(obj); err != nil {
		return named(dimse.Status{Code: dimse.StatusCannotUnderstand, Comment: "Affected SOP Instance UID is not a valid UID"})
	}
	meta := part10.Meta{
		MediaStorageSOPClassUID:    req.AffectedSOPClassUID,
		MediaStorageSOPInstanceUID: req.AffectedSOPInstanceUID,
		TransferSyntaxUID:          req.TransferSyntaxUID,
		ImplementationClassUID:     version.ImplementationClassUID,
		ImplementationVersionName:  version.ImplementationVersionName,
		// PS3.10 Table 7.1-1: the Source AE wrote the file (we did, as
		// the called AE); the Sending and Receiving AEs are the network's.
		// The content identity is the data set's, so what the meta
		// header names changes no object's identity (docs/pipeline.md,
		// "Duplicates").
		SourceApplicationEntityTitle:    req.Association.CalledAE,
		SendingApplicationEntityTitle:   req.Association.CallingAE,
		ReceivingApplicationEntityTitle: req.Association.CalledAE,
	}
	if err := meta.Validate(); err != nil {
		return named(dimse.Status{Code: dimse.StatusCannotUnderstand, Comment: "SOP Class UID or transfer syntax UID is not a valid UID"})
	}
	part10File := io.MultiReader(bytes.NewReader(part10.AppendHeader(nil, meta)), body)
	stored, err := h.store.Put(ctx, obj, part10File)
	if err != nil {
		if v := in.Err(); v != nil {
			// The reader's verdict failed the Put: nothing is stored.
			st := verdictStatus(v)
			log.Warn("C-STORE refused", "status", fmt.Sprintf("%04X", st.Code), "reason", st.Comment)
			return named(st)
		}
		cutShort := func(err error) error {
			return &CutShort{StudyInstanceUID: hdr.StudyInstanceUID, SeriesInstanceUID: hdr.SeriesInstanceUID, Err: err}
		}
		if ctx.Err() != nil {
			return cutShort(fmt.Errorf("ingest: store abandoned: %w", err))
		}
		if errors.Is(err, dicomnet.ErrIncomplete) {
			// The sender broke the data set off (A-ABORT, A-RELEASE-RQ, closed connection, timeout): the
			// store has nothing, no status can be sent, and the server logs it ("C-STORE incomplete").
			return cutShort(fmt.Errorf("ingest: data set incomplete: %w", err))
		}
		log.Error("store failed", "err", err)
		return named(dimse.Status{Code: dimse.StatusOutOfResources, Comment: "storage failed, please retry"})
	}
	// Lines name the object by association and message id: keys hold
	// UIDs (the stores log the key's digest, see logname).
	log.Debug("stored", "bytes", stored.Size, "duplicate", stored.Duplicate, "conflict", stored.Conflict)
	if tag, after, ok := in.Unordered(); ok {
		// Stored as sent (conformance.md, Elements out of tag order); the
		// pipeline's tag-order warning says the same of the stored file.
		// The Inspector read the whole data set to store it: no cost.
		log.Info("stored with elements out of tag order", "misplaced", dataset.TagString(tag), "after", dataset.TagString(after))
	}
	if stored.KeptBeside() {
		// Conflict with Duplicate: these bytes were kept beside the
		// instance before (the conflict key is named after them), so
		// nothing new was stored; an identical resend, as below.
		log.Warn("other bytes sent for an already stored instance: kept beside it (another data set, or the same one from another AE or release of ours: the pipeline tells which)")
	}
	st := dimse.Status{Code: dimse.StatusSuccess}
	if hdr.Group0002Dropped {
		st = dimse.Status{Code: dimse.StatusElementsDiscarded, Comment: "group 0002 elements in the dataset were discarded"}
	}
	if stored.Duplicate {
		return &AlreadyHeld{Status: st, Key: stored.Key, StudyInstanceUID: hdr.StudyInstanceUID, SeriesInstanceUID: hdr.SeriesInstanceUID}
	}
	if hdr.Group0002Dropped {
		return st
	}
	return nil
}

// refusal is the status for a dataset refused before it is stored: a
// reader verdict reached in the header, or SOP Class and Instance UIDs
// that are missing or differ from the command's.
func refusal(req *dicomnet.CStoreRequest, hdr dataset.Header, verdict error) (dimse.Status, bool) {
	switch {
	case verdict != nil:
		return verdictStatus(verdict), true
	case hdr.SOPInstanceUID == "" || hdr.SOPClassUID == "":
		return dimse.Status{Code: StatusUnreadable, Comment: "dataset lacks SOP Class or SOP Instance UID"}, true
	case hdr.SOPInstanceUID != req.AffectedSOPInstanceUID:
		return dimse.Status{Code: dimse.StatusDataSetDoesNotMatchSOPClass, Comment: "dataset SOP Instance UID differs from the command's"}, true
	case hdr.SOPClassUID != req.AffectedSOPClassUID:
		return dimse.Status{Code: dimse.StatusDataSetDoesNotMatchSOPClass, Comment: "dataset SOP Class UID differs from the command's"}, true
	}
	return dimse.Status{}, false
}

// verdictStatus answers a reader verdict. The comment names the element,
// never a value (it goes to the sender and to the audit record).
func verdictStatus(v error) dimse.Status {
	code, what := StatusUnreadable, "dataset cannot be parsed"
	switch {
	case errors.Is(v, dataset.ErrTruncated):
		code, what = StatusTruncated, "dataset ends inside an element"
	case errors.Is(v, dataset.ErrLimit):
		code, what = StatusOverLimit, "dataset exceeds a reader limit"
	case errors.Is(v, dataset.ErrRepeated):
		// Within 64 characters with its tag: the structure can be followed, it is a tag given twice (which
		// value holds is ambiguous) the sender's administrator has to look for. An element merely out of tag
		// order is stored.
		what = "element repeated"
	case errors.Is(v, dataset.ErrOrder):
		what = "too many elements out of tag order"
	}
	var at *dataset.Error
	if errors.As(v, &at) && at.HasTag {
		what += " at " + dataset.TagString(at.Tag)
	}
	return dimse.Status{Code: code, Comment: what}
}
