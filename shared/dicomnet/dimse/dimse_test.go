package dimse

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCommandRoundTrip(t *testing.T) {
	rq := NewCStoreRQ(7, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.45", PriorityHigh)
	rq.Present |= HasMoveOriginatorAETitle | HasMoveOriginatorMessageID
	rq.MoveOriginatorAETitle, rq.MoveOriginatorMessageID = "MOVER", 99
	tests := []*Command{
		rq,
		NewCEchoRQ(1),
		NewCEchoRSP(NewCEchoRQ(5), Status{}),
		NewCStoreRSP(rq, Status{Code: StatusOutOfResources, Comment: "disk full"}),
		NewNActionRQ(9, "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.1.1", 1),
		NewNActionRSP(NewNActionRQ(9, "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.1.1", 1), Status{}),
		NewNActionRSP(NewNActionRQ(9, "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.1.1", 2), Status{Code: StatusNoSuchAction, Comment: "action 2"}),
		NewNEventReportRQ(3, "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.1.1", 2),
		NewNEventReportRSP(NewNEventReportRQ(3, "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.1.1", 1), Status{}),
	}
	for i, c := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			got, err := Decode(c.Encode())
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(c, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// TestCEchoRSPBytes pins the exact encoding: group length, ascending tags, UID padded with NUL.
func TestCEchoRSPBytes(t *testing.T) {
	got := NewCEchoRSP(NewCEchoRQ(0x1234), Status{}).Encode()
	want := strings.Join([]string{
		"00000000 04000000 42000000",                             // (0000,0000) UL 4 = 66
		"00000200 12000000 312e322e3834302e31303030382e312e3100", // (0000,0002) "1.2.840.10008.1.1\0"
		"00000001 02000000 3080",                                 // (0000,0100) 8030
		"00002001 02000000 3412",                                 // (0000,0120) 1234
		"00000008 02000000 0101",                                 // (0000,0800) 0101
		"00000009 02000000 0000",                                 // (0000,0900) 0000
	}, "")
	if hex.EncodeToString(got) != strings.ReplaceAll(want, " ", "") {
		t.Errorf("got  %x\nwant %s", got, strings.ReplaceAll(want, " ", ""))
	}
}

func TestCStoreRSPFields(t *testing.T) {
	rq := NewCStoreRQ(3, "1.2.840.10008.5.1.4.1.1.4", "1.2.3", PriorityMedium)
	long := strings.Repeat("x", 100)
	rsp, err := Decode(NewCStoreRSP(rq, Status{Code: StatusCannotUnderstand, Comment: long}).Encode())
	if err != nil {
		t.Fatal(err)
	}
	if rsp.CommandField != CStoreRSP || rsp.MessageIDBeingRespondedTo != 3 || rsp.AffectedSOPClassUID != rq.AffectedSOPClassUID ||
		rsp.AffectedSOPInstanceUID != "1.2.3" || rsp.HasDataSet() || rsp.Status != StatusCannotUnderstand {
		t.Errorf("%+v", rsp)
	}
	if len(rsp.ErrorComment) != MaxCommentLen {
		t.Errorf("comment length %d, want %d", len(rsp.ErrorComment), MaxCommentLen)
	}
	ok, _ := Decode(NewCStoreRSP(rq, Status{Code: StatusSuccess, Comment: "ignored"}).Encode())
	if ok.Has(HasErrorComment) {
		t.Error("success response carries an error comment")
	}
}

// TestErrorCommentOnlyOnFailure: every response builder carries Error
// Comment (0000,0902) on a failure and leaves it out on a success.
func TestErrorCommentOnlyOnFailure(t *testing.T) {
	builders := []struct {
		name  string
		build func(Status) *Command
	}{
		{"C-ECHO-RSP", func(st Status) *Command { return NewCEchoRSP(NewCEchoRQ(1), st) }},
		{"C-STORE-RSP", func(st Status) *Command {
			return NewCStoreRSP(NewCStoreRQ(1, "1.2.840.10008.5.1.4.1.1.4", "1.2.3", PriorityMedium), st)
		}},
		{"N-ACTION-RSP", func(st Status) *Command {
			return NewNActionRSP(NewNActionRQ(1, "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.1.1", 1), st)
		}},
		{"N-EVENT-REPORT-RSP", func(st Status) *Command {
			return NewNEventReportRSP(NewNEventReportRQ(1, "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.1.1", 1), st)
		}},
	}
	for _, b := range builders {
		for _, c := range []struct {
			status      Status
			wantComment string
		}{
			{Status{Code: StatusSuccess, Comment: "ignored"}, ""},
			{Status{Code: StatusProcessingFailure, Comment: "disk full"}, "disk full"},
		} {
			rsp, err := Decode(b.build(c.status).Encode())
			if err != nil {
				t.Fatalf("%s: %v", b.name, err)
			}
			if rsp.Has(HasErrorComment) != (c.wantComment != "") || rsp.ErrorComment != c.wantComment {
				t.Errorf("%s with status %#04x: Error Comment %q (present %v), want %q",
					b.name, c.status.Code, rsp.ErrorComment, rsp.Has(HasErrorComment), c.wantComment)
			}
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := map[string][]byte{
		"truncated header": {0, 0, 0, 1},
		"length runs past": {0, 0, 0, 1, 0xFF, 0, 0, 0, 1, 0},
		"other group":      {8, 0, 0x18, 0, 0, 0, 0, 0},
		"US with 4 bytes":  {0, 0, 0, 1, 4, 0, 0, 0, 1, 0, 0, 0},
		"huge length":      {0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF},
		"empty":            {},
		// Message ID (0000,0110) 1 alone: no Command Field.
		"no Command Field": {0, 0, 0x10, 1, 2, 0, 0, 0, 1, 0},
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := Decode(b); !errors.Is(err, ErrMalformed) {
				t.Errorf("err = %v", err)
			}
		})
	}
}

func TestDecodeSkipsUnknownAndTrims(t *testing.T) {
	var b []byte
	b = appendPadded(b, 0x0002, "1.2.3", 0)
	b = appendElem(b, 0x0600, []byte("DEST  ")) // Move Destination: skipped
	b = appendUS(b, 0x0100, CStoreRQ)
	b = appendPadded(b, 0x1000, "1.2.3.4 ", ' ')
	c, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if c.AffectedSOPClassUID != "1.2.3" || c.AffectedSOPInstanceUID != "1.2.3.4" || c.CommandField != CStoreRQ || c.HasDataSet() {
		t.Errorf("%+v", c)
	}
}

func TestStatusClasses(t *testing.T) {
	tests := []struct {
		code                      uint16
		success, warning, failure bool
	}{
		{0x0000, true, false, false},
		{0xB000, false, true, false},
		{0xB006, false, true, false},
		{0xB007, false, true, false},
		{0x0001, false, true, false},
		{0xA700, false, false, true},
		{0xA900, false, false, true},
		{0xC000, false, false, true},
		{0xC123, false, false, true},
		{0x0110, false, false, true},
		{0x0122, false, false, true},
		{0x0124, false, false, true},
		{0xFF00, false, false, false},
	}
	for _, tc := range tests {
		s := Status{Code: tc.code}
		if s.IsSuccess() != tc.success || s.IsWarning() != tc.warning || s.IsFailure() != tc.failure {
			t.Errorf("%04X: success %v warning %v failure %v", tc.code, s.IsSuccess(), s.IsWarning(), s.IsFailure())
		}
	}
	var err error = &Status{Code: StatusOutOfResources, Comment: "x"}
	if !strings.Contains(err.Error(), "A700") {
		t.Errorf("Error() = %q", err.Error())
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(NewCStoreRQ(1, "1.2.840.10008.5.1.4.1.1.2", "1.2.3", 0).Encode())
	f.Add(NewCEchoRSP(NewCEchoRQ(1), Status{}).Encode())
	f.Add(NewCStoreRSP(NewCStoreRQ(1, "1.2", "1.2.3", 0), Status{Code: 0xC000, Comment: "bad"}).Encode())
	// Command sets the chaos run sent a live SCP: the group length's value 3 bytes off (odd), the group length
	// element 3 bytes long, no group length, and an odd-length element after the last.
	rq := NewCStoreRQ(1, "1.2.840.10008.5.1.4.1.1.7", "2.25.1", 0).Encode()
	odd := bytes.Clone(rq)
	binary.LittleEndian.PutUint32(odd[8:], uint32(len(odd)-12+3))
	f.Add(odd)
	short := bytes.Clone(rq)
	binary.LittleEndian.PutUint32(short[4:], 3)
	f.Add(short)
	f.Add(bytes.Clone(rq[12:]))
	f.Add(append(bytes.Clone(rq), 0x00, 0x00, 0x00, 0x70, 3, 0, 0, 0, 'a', 'b', 'c'))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err != nil {
			return
		}
		c2, err := Decode(c.Encode())
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !bytes.Equal(c.Encode(), c2.Encode()) {
			t.Fatal("encoding not stable")
		}
	})
}

func BenchmarkCommandRoundTrip(b *testing.B) {
	rq := NewCStoreRQ(1, "1.2.840.10008.5.1.4.1.1.2", "1.2.826.0.1.3680043.2.1125.1.123456789", PriorityMedium)
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = rq.Append(buf[:0])
		if _, err := Decode(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// TestNActionRQBytes pins the DIMSE-N elements' tags and their ascending order: (0000,0003) after (0000,0002)'s
// place, (0000,1001) and (0000,1008) after (0000,1000)'s.
func TestNActionRQBytes(t *testing.T) {
	got := NewNActionRQ(0x0102, "1.2", "1.3", 1).Encode()
	want := strings.Join([]string{
		"00000000 04000000 40000000", // (0000,0000) UL 4 = 64
		"00000300 04000000 312e3200", // (0000,0003) "1.2\0"
		"00000001 02000000 3001",     // (0000,0100) 0130
		"00001001 02000000 0201",     // (0000,0110) 0102
		"00000008 02000000 0000",     // (0000,0800) 0000: a data set follows
		"00000110 04000000 312e3300", // (0000,1001) "1.3\0"
		"00000810 02000000 0100",     // (0000,1008) 1
	}, "")
	if hex.EncodeToString(got) != strings.ReplaceAll(want, " ", "") {
		t.Errorf("got  %x\nwant %s", got, strings.ReplaceAll(want, " ", ""))
	}
}

func TestNResponsesEcho(t *testing.T) {
	rq := NewNActionRQ(4, "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.1.1", 1)
	rsp, err := Decode(NewNActionRSP(rq, Status{Code: StatusInvalidArgumentValue, Comment: "empty Referenced SOP Sequence"}).Encode())
	if err != nil {
		t.Fatal(err)
	}
	if rsp.CommandField != NActionRSP || rsp.MessageIDBeingRespondedTo != 4 || rsp.AffectedSOPClassUID != rq.RequestedSOPClassUID ||
		rsp.AffectedSOPInstanceUID != rq.RequestedSOPInstanceUID || rsp.ActionTypeID != 1 || rsp.HasDataSet() ||
		rsp.ErrorComment != "empty Referenced SOP Sequence" {
		t.Errorf("N-ACTION-RSP %+v", rsp)
	}
	ev := NewNEventReportRQ(8, "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.1.1", 2)
	if !ev.HasDataSet() {
		t.Error("N-EVENT-REPORT-RQ announces no data set")
	}
	er, err := Decode(NewNEventReportRSP(ev, Status{}).Encode())
	if err != nil {
		t.Fatal(err)
	}
	if er.CommandField != NEventReportRSP || er.MessageIDBeingRespondedTo != 8 || er.EventTypeID != 2 || er.Has(HasErrorComment) {
		t.Errorf("N-EVENT-REPORT-RSP %+v", er)
	}
}

// TestResponsesEchoValidUIDsOnly: every response built from a request
// echoes its SOP class and instance UIDs only when they are valid UIDs;
// anything else is left out, element and all (PS3.7: U(=)).
func TestResponsesEchoValidUIDsOnly(t *testing.T) {
	const class, inst = "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4"
	bad := strings.Repeat("9", 65)
	tests := []struct {
		name  string
		build func(class, inst string) *Command
	}{
		{"C-STORE-RSP", func(c, i string) *Command { return NewCStoreRSP(NewCStoreRQ(1, c, i, PriorityMedium), Status{}) }},
		{"N-ACTION-RSP", func(c, i string) *Command { return NewNActionRSP(NewNActionRQ(1, c, i, 1), Status{}) }},
		{"N-EVENT-REPORT-RSP", func(c, i string) *Command { return NewNEventReportRSP(NewNEventReportRQ(1, c, i, 1), Status{}) }},
		{"0211", func(c, _ string) *Command { return NewUnrecognizedRSP(NewCStoreRQ(1, c, "", PriorityMedium)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good := tt.build(class, inst)
			if !good.Has(HasAffectedSOPClassUID) || good.AffectedSOPClassUID != class {
				t.Errorf("valid class not echoed: %+v", good)
			}
			if tt.name != "0211" && (!good.Has(HasAffectedSOPInstanceUID) || good.AffectedSOPInstanceUID != inst) {
				t.Errorf("valid instance not echoed: %+v", good)
			}
			for _, c := range []*Command{tt.build(bad, bad), tt.build("1.2.x", "")} {
				dec, err := Decode(c.Encode())
				if err != nil {
					t.Fatal(err)
				}
				if dec.Has(HasAffectedSOPClassUID) || dec.Has(HasAffectedSOPInstanceUID) {
					t.Errorf("echoed what is no UID: %+v", dec)
				}
			}
		})
	}
}

// TestWithoutComments: a peer's Error Comment, and all after it, is cut from a message telling its status, which
// keeps the code and meaning and says a comment was there; a message without one is itself, and so is one cut before.
func TestWithoutComments(t *testing.T) {
	long := strings.Repeat("Doe^Jane 1.2.3.4.5 ", 600)
	for _, tc := range []struct{ name, msg, want string }{
		{"commented", "commitreport: PACS answered the report with " + Status{Code: StatusProcessingFailure, Comment: long}.Error(),
			"commitreport: PACS answered the report with dimse: status 0x0110 (Processing failure)" + CommentNotKept},
		{"meaning with a colon", Status{Code: StatusOutOfResources, Comment: "disk: full\nDoe^Jane"}.Error(),
			"dimse: status 0xA700 (Refused: Out of resources)" + CommentNotKept},
		{"a comment telling a status", Status{Code: 0xC000, Comment: "dimse: status 0x0000 (Success): Doe^Jane"}.Error(),
			"dimse: status 0xC000 (Error: Cannot understand)" + CommentNotKept},
		{"no comment", "commitreport: PACS answered the report with " + Status{Code: StatusProcessingFailure}.Error(),
			"commitreport: PACS answered the report with dimse: status 0x0110 (Processing failure)"},
		{"a status without a comment, then one with", Status{Code: StatusProcessingFailure}.Error() + "; then " +
			Status{Code: StatusProcessingFailure, Comment: "Doe^Jane"}.Error(),
			"dimse: status 0x0110 (Processing failure); then dimse: status 0x0110 (Processing failure)" + CommentNotKept},
		{"no status", "dicomnet: dial: connection refused: x", "dicomnet: dial: connection refused: x"},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := WithoutComments(tc.msg)
			if got != tc.want {
				t.Errorf("WithoutComments(%.80q…) = %q, want %q", tc.msg, got, tc.want)
			}
			if again := WithoutComments(got); again != got {
				t.Errorf("cut again: %q, want %q unchanged", again, got)
			}
		})
	}
}

// TestWithoutCommentsReadsEveryStatus: the writer (Error) and the un-writer (WithoutComments) tell a status alike
// for every code, so they cannot drift apart: its code and meaning read back whole, its comment cut.
func TestWithoutCommentsReadsEveryStatus(t *testing.T) {
	for c := range 1 << 16 {
		told := Status{Code: uint16(c)}.Error()
		if got := toldStatus.FindString(told); got != told {
			t.Fatalf("status %04X: %q read as %q", c, told, got)
		}
		if got := WithoutComments(Status{Code: uint16(c), Comment: "x"}.Error()); got != told+CommentNotKept {
			t.Fatalf("status %04X commented: %q, want %q", c, got, told+CommentNotKept)
		}
	}
}

// FuzzWithoutComments: whatever the comment a status carries, the message cut tells the status and nothing of the
// comment, and cutting it again changes nothing.
func FuzzWithoutComments(f *testing.F) {
	f.Add(uint16(StatusProcessingFailure), "no transaction 1.2.3 for Doe^Jane", "commitreport: PACS answered the report with ")
	f.Add(uint16(0xA700), "): dimse: status 0x0110 (x): y", "")
	f.Add(uint16(0), "", "dimse: status 0x0110 (")
	f.Add(uint16(StatusProcessingFailure), "Doe^Jane", "dimse: status 0x0110 (Processing failure); then ")
	f.Fuzz(func(t *testing.T, code uint16, comment, before string) {
		st := Status{Code: code, Comment: comment}
		msg := before + st.Error()
		got := WithoutComments(msg)
		if again := WithoutComments(got); again != got {
			t.Fatalf("cut again: %q, then %q", got, again)
		}
		if comment == "" {
			return
		}
		// Whatever comes before the status (another status, commented or not), nothing of the comment is kept:
		// the cut is at or before the status's own.
		told := len(before) + len(Status{Code: code}.Error())
		kept, ok := strings.CutSuffix(got, CommentNotKept)
		if !ok || len(kept) > told || !strings.HasPrefix(msg, kept) {
			t.Fatalf("WithoutComments(%q) = %q, want at most %q and CommentNotKept", msg, got, msg[:told])
		}
		if !toldStatus.MatchString(before) {
			if want := before + (Status{Code: code}).Error() + CommentNotKept; got != want {
				t.Fatalf("WithoutComments(%q) = %q, want %q", msg, got, want)
			}
		}
	})
}

// TestResponseField holds the one rule of a response's Command Field (PS3.7 E.1): its request's with the response
// bit set, the bit only a response has. The client (the response it awaits) and NewUnrecognizedRSP (the response
// it builds) each computed it for themselves, the server's dispatch tested the bit for itself.
func TestResponseField(t *testing.T) {
	for _, tc := range []struct {
		name          string
		request, want uint16
	}{
		{"C-STORE", CStoreRQ, CStoreRSP},
		{"C-ECHO", CEchoRQ, CEchoRSP},
		{"N-EVENT-REPORT", NEventReportRQ, NEventReportRSP},
		{"N-ACTION", NActionRQ, NActionRSP},
		{"C-FIND", CFindRQ, 0x8020},
		{"C-GET", CGetRQ, 0x8010},
		{"C-MOVE", CMoveRQ, 0x8021},
		{"N-GET", 0x0110, 0x8110},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ResponseField(tc.request); got != tc.want {
				t.Errorf("ResponseField(0x%04X) = 0x%04X, want 0x%04X", tc.request, got, tc.want)
			}
			if IsResponse(tc.request) || !IsResponse(tc.want) {
				t.Errorf("IsResponse(0x%04X) = %v, IsResponse(0x%04X) = %v; want false, true", tc.request, IsResponse(tc.request), tc.want, IsResponse(tc.want))
			}
			if got := NewUnrecognizedRSP(&Command{CommandField: tc.request, MessageID: 3}).CommandField; got != tc.want {
				t.Errorf("NewUnrecognizedRSP of 0x%04X: command field 0x%04X, want 0x%04X", tc.request, got, tc.want)
			}
		})
	}
	if IsResponse(CCancelRQ) {
		t.Error("C-CANCEL-RQ taken for a response")
	}
}
