package dicomnet_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"strings"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
)

// A storage SCP: the handler streams each data set somewhere durable and only then returns nil (0000).
// Returning a dimse.Status sends that status; any other error sends 0110.
func ExampleServer() {
	srv := &dicomnet.Server{
		AETitle: "INGEST",
		Accept: func(ctx context.Context, a *dicomnet.AssociationInfo) error {
			if a.CallingAE != "MODALITY1" {
				return dicomnet.RejectCallingAENotRecognized
			}
			return nil
		},
		MaxAssociations: 64,
		Handler: dicomnet.HandlerFunc(func(ctx context.Context, req *dicomnet.CStoreRequest, ds io.Reader) error {
			h := sha256.New() // stand-in for a durable store
			if _, err := io.Copy(h, ds); err != nil {
				return &dimse.Status{Code: dimse.StatusOutOfResources, Comment: "storage failed"}
			}
			return nil
		}),
	}
	// In a program: srv.Addr = ":11112"; srv.ListenAndServe(), and srv.Shutdown(ctx) on SIGTERM.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(l)

	ctx := context.Background()
	contexts := dicomnet.StorageContexts([]string{dicomuid.SecondaryCaptureImageStorage}, dicomuid.ExplicitVRLittleEndian)
	_, err = dicomnet.Dial(ctx, l.Addr().String(), dicomnet.ClientConfig{CallingAE: "STRANGER", CalledAE: "INGEST", Contexts: contexts})
	fmt.Println("STRANGER:", errors.Is(err, dicomnet.RejectCallingAENotRecognized))
	a, err := dicomnet.Dial(ctx, l.Addr().String(), dicomnet.ClientConfig{CallingAE: "MODALITY1", CalledAE: "INGEST", Contexts: contexts})
	if err != nil {
		log.Fatal(err)
	}
	ds := "\x08\x00\x18\x00UI\x06\x001.2.3\x00" // (0008,0018) SOP Instance UID, Explicit VR LE
	st, err := a.Store(ctx, dicomuid.SecondaryCaptureImageStorage, "1.2.3", dicomuid.ExplicitVRLittleEndian, strings.NewReader(ds))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("MODALITY1: status %04X\n", st.Code)
	if err := a.Release(ctx); err != nil {
		log.Fatal(err)
	}
	if err := srv.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// STRANGER: true
	// MODALITY1: status 0000
}

// A storage SCU: associate, send one data set, release.
func ExampleDial() {
	srv, err := dicomnettest.NewServer(&dicomnet.Server{Handler: dicomnet.HandlerFunc(
		func(ctx context.Context, req *dicomnet.CStoreRequest, ds io.Reader) error {
			_, err := io.Copy(io.Discard, ds)
			return err
		})})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	ctx := context.Background()
	a, err := dicomnet.Dial(ctx, srv.Addr, dicomnet.ClientConfig{
		CallingAE: "SCU", CalledAE: "INGEST",
		Contexts: dicomnet.StorageContexts([]string{dicomuid.SecondaryCaptureImageStorage}, dicomuid.ExplicitVRLittleEndian),
	})
	if err != nil {
		log.Fatal(err)
	}
	// A tiny Explicit VR LE data set: (0008,0018) SOP Instance UID.
	ds := "\x08\x00\x18\x00UI\x06\x001.2.3\x00"
	st, err := a.Store(ctx, dicomuid.SecondaryCaptureImageStorage, "1.2.3", dicomuid.ExplicitVRLittleEndian, strings.NewReader(ds))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("status %04X\n", st.Code)
	if err := a.Release(ctx); err != nil {
		log.Fatal(err)
	}
	// Output: status 0000
}
