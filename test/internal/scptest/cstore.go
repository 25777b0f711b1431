package scptest

import (
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
)

// cStoreStart is the start of a real object of class naming the instance named (its SOP Class UID, SOP Instance
// UID, then 512 bytes of Pixel Data), explicit VR little endian, the transfer syntax of dicomnettest.AssociateRQ's
// CT context (3).
func cStoreStart(class, named string) []byte {
	return pipelinetest.DataSet([]pipelinetest.Elem{
		pipelinetest.Str(pipelinetest.Tag(0x0008, 0x0016), "UI", class),
		pipelinetest.Str(pipelinetest.Tag(0x0008, 0x0018), "UI", named),
		pipelinetest.Raw(pipelinetest.Tag(0x7FE0, 0x0010), "OW", make([]byte, 512)),
	}, false)
}

// AbortedCStore sends, as calling to called at addr, a C-STORE of class and sop on the CT context (3) whose data set
// an A-ABORT breaks off, as a PACS stopped or its link lost mid-object: the start of a real object (cStoreStart,
// naming named), then half its Pixel Data, which the SCP reads until the abort when it names sop. (Bytes it cannot
// parse, or naming another instance, it refuses before then: a C-STORE refused, then cut short, not merely cut
// short.)
func AbortedCStore(t testing.TB, addr, calling, called, class, sop, named string) {
	t.Helper()
	ds := cStoreStart(class, named)
	p := dicomnettest.DialParrot(t, addr)
	p.Associate(dicomnettest.AssociateRQ(calling, called))
	p.SendPDVs(dicomnettest.CommandPDV(3, dimse.NewCStoreRQ(1, class, sop, dimse.PriorityMedium)), dicomnettest.PDV(3, 0, ds[:len(ds)-256]))
	p.SendPDU(&pdu.Abort{})
}

// RefusedCStore sends, as calling to called at addr, a whole C-STORE of class and sop on the CT context (3) whose
// data set names another instance (named): the SCP reads its header and refuses it, A900, nothing stored. The
// association is released after the answer. It returns the status answered.
func RefusedCStore(t testing.TB, addr, calling, called, class, sop, named string) uint16 {
	t.Helper()
	p := dicomnettest.DialParrot(t, addr)
	p.Associate(dicomnettest.AssociateRQ(calling, called))
	p.SendMessage(3, dimse.NewCStoreRQ(1, class, sop, dimse.PriorityMedium), cStoreStart(class, named))
	rsp := p.ExpectCommand()
	p.SendPDU(&pdu.ReleaseRQ{})
	p.Expect(pdu.TypeReleaseRP)
	return rsp.Status
}
