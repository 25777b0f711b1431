// Package commitments is scp-task's Storage Commitment handler: it reads each N-ACTION's request and makes it
// durable, as a request document under commitment/requests/ in the store, before the SCP answers success. The
// pipeline (the local worker, or the commitment function in AWS) takes it from there: evaluation, the report
// to the requesting AE, audit and events. A request whose result could never be delivered (no report address
// for its AE title) is refused instead.
package commitments

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/commitment"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

type recordPutter interface {
	PutRecord(ctx context.Context, key string, body []byte) error
}

// Handler is the SCP's dicomnet.CommitmentHandler.
type Handler struct {
	Store recordPutter
	// CanReport reports whether results for a calling AE can be delivered once its association is gone (it
	// has a report address); nil accepts every AE.
	CanReport func(callingAE string) bool
	Logger    *slog.Logger
}

var _ dicomnet.CommitmentHandler = (*Handler)(nil)

// ServeCommitment implements dicomnet.CommitmentHandler.
func (h *Handler) ServeCommitment(ctx context.Context, req *dicomnet.CommitmentRequest, ds io.Reader) error {
	log := h.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("association", req.Association.ID, "message_id", req.MessageID)
	r, err := commitment.ParseRequest(ds, req.TransferSyntaxUID)
	if err != nil {
		log.Info("storage commitment request refused", "err", err)
		return err
	}
	if h.CanReport != nil && !h.CanReport(req.Association.CallingAE) {
		log.Warn("storage commitment request from an AE title without a report address refused", "calling_ae", req.Association.CallingAE)
		return dimse.Status{Code: dimse.StatusNotAuthorized, Comment: "no report address for this AE title"}
	}
	doc := pipeline.CommitmentRequest{
		SchemaVersion: 1, TransactionUID: r.TransactionUID, Refs: r.Refs,
		CallingAE: req.Association.CallingAE, CalledAE: req.Association.CalledAE, PeerAddr: addr(req.Association),
		AssociationID: req.Association.ID, MessageID: req.MessageID, ReceivedAt: req.ReceivedAt.UTC(),
	}
	if doc.ReceivedAt.IsZero() {
		doc.ReceivedAt = time.Now().UTC()
	}
	body, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("commitments: marshal request: %w", err)
	}
	if err := h.Store.PutRecord(ctx, doc.Key(), body); err != nil {
		log.Error("storage commitment request not made durable", "err", err)
		return dimse.Status{Code: dimse.StatusProcessingFailure, Comment: "request could not be stored; send it again"}
	}
	log.Info("storage commitment request stored", "key", doc.Key(), "instances", len(r.Refs))
	return nil
}

func addr(a *dicomnet.AssociationInfo) string {
	if a.RemoteAddr == nil {
		return ""
	}
	return a.RemoteAddr.String()
}
