package pdu

import (
	"bytes"
	"os"
	"testing"
)

func seedPDUs(f *testing.F) {
	if b, err := os.ReadFile("testdata/echoscu-rq.bin"); err == nil {
		f.Add(b)
	}
	for _, p := range []PDU{sampleRQ(), &AssociateAC{ProtocolVersion: 1, PresentationContexts: []PresentationContextAC{{ID: 1, TransferSyntax: "1.2"}}},
		&AssociateRJ{1, 1, 3}, &PDataTF{PDVs: []PDV{{1, 3, []byte{0, 0, 0, 0}}}}, &ReleaseRQ{}, &ReleaseRP{}, &Abort{2, 2}} {
		b, _ := Encode(p)
		f.Add(b)
	}
}

// FuzzRead decodes arbitrary bytes as a PDU stream; it must never panic and re-encoding a decoded PDU must decode
// to the same PDU.
func FuzzRead(f *testing.F) {
	seedPDUs(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		// The buffers a body is read into, as the caller is told of them: never past the announced length,
		// and under three times it in all (doubling from 64 KiB).
		if h, err := ParseHeader(b); err == nil {
			total := 0
			_, err := ReadBodyFunc(bytes.NewReader(b[HeaderLen:]), h.Length, 1<<20, func(n int) error {
				if n > int(h.Length) {
					t.Fatalf("buffer of %d bytes for a body of %d", n, h.Length)
				}
				total += n
				return nil
			})
			if err == nil && total > 3*int(h.Length) {
				t.Fatalf("%d bytes of buffers for a body of %d", total, h.Length)
			}
		}
		p, err := Read(bytes.NewReader(b), 1<<16)
		if err != nil {
			return
		}
		enc, err := Encode(p)
		if err != nil {
			return // e.g. an AE title that decoded longer than 16 is impossible; oversized items are
		}
		p2, err := Read(bytes.NewReader(enc), 1<<20)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		enc2, _ := Encode(p2)
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable:\n% x\n% x", enc, enc2)
		}
	})
}

// FuzzAssociateRQ decodes an A-ASSOCIATE-RQ variable field (items and sub-items).
func FuzzAssociateRQ(f *testing.F) {
	if b, err := os.ReadFile("testdata/echoscu-rq.bin"); err == nil {
		f.Add(b[HeaderLen:])
	}
	b, _ := Encode(sampleRQ())
	f.Add(b[HeaderLen:])
	f.Fuzz(func(t *testing.T, body []byte) {
		rq, err := DecodeAssociateRQ(body)
		if err != nil {
			return
		}
		if len(rq.CalledAE) > 16 || len(rq.CallingAE) > 16 {
			t.Fatalf("AE title longer than its field")
		}
		ac, err := Encode(&AssociateAC{ProtocolVersion: 1, Echo: &rq.Echo})
		if err != nil || !bytes.Equal(ac[10:74], body[4:68]) {
			t.Fatalf("A-ASSOCIATE-AC bytes 11-74 % x (%v), want the request's % x", ac[10:74], err, body[4:68])
		}
	})
}

// FuzzItems decodes a user information item body (sub-items 51..59 and unknown ones).
func FuzzItems(f *testing.F) {
	rq := sampleRQ()
	b, _ := appendUserInfo(nil, &rq.UserInformation)
	f.Add(b[4:])
	f.Add([]byte{0x51, 0, 0, 4, 0, 0, 0x40, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var u UserInformation
		_ = decodeUserInfo(&u, b)
	})
}

// FuzzPDVs decodes a P-DATA-TF body.
func FuzzPDVs(f *testing.F) {
	f.Add([]byte{0, 0, 0, 4, 1, 3, 0, 0})
	f.Add([]byte{0, 0, 0, 2, 1, 2, 0, 0, 0, 3, 1, 0, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		pdvs, err := DecodePDVs(nil, b)
		if err != nil {
			return
		}
		n := 0
		for _, v := range pdvs {
			n += PDVHeaderLen + len(v.Data)
		}
		if n != len(b) {
			t.Fatalf("PDVs cover %d of %d bytes", n, len(b))
		}
	})
}
