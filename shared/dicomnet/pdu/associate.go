package pdu

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// ProtocolVersion is the only version of the upper layer protocol (bit 0 set).
const ProtocolVersion = 0x0001

// PresentationContextRQ is item 20: one proposed presentation context.
type PresentationContextRQ struct {
	ID               byte
	AbstractSyntax   string
	TransferSyntaxes []string
}

// Presentation context results (PS3.8 Table 9-18).
const (
	ResultAcceptance                   = 0
	ResultUserRejection                = 1
	ResultProviderRejectionNoReason    = 2
	ResultAbstractSyntaxNotSupported   = 3
	ResultTransferSyntaxesNotSupported = 4
)

// PresentationContextAC is item 21: the acceptor's answer for one context.
type PresentationContextAC struct {
	ID             byte
	Result         byte
	TransferSyntax string // always sent, even when rejected
}

// RoleSelection is sub-item 54.
type RoleSelection struct {
	SOPClassUID string
	SCU, SCP    byte
}

// AsyncOperationsWindow is sub-item 53.
type AsyncOperationsWindow struct{ Invoked, Performed uint16 }

// SOPClassExtendedNegotiation is sub-item 56; Info runs to the end of the item (it has no length of its own).
type SOPClassExtendedNegotiation struct {
	SOPClassUID string
	Info        []byte
}

// SOPClassCommonExtendedNegotiation is sub-item 57.
type SOPClassCommonExtendedNegotiation struct {
	SOPClassUID                string
	ServiceClassUID            string
	RelatedGeneralSOPClassUIDs []string
}

// UserIdentityRQ is sub-item 58.
type UserIdentityRQ struct {
	IdentityType              byte
	PositiveResponseRequested byte
	PrimaryField              []byte
	SecondaryField            []byte
}

// UserIdentityAC is sub-item 59.
type UserIdentityAC struct{ ServerResponse []byte }

// UserInformation is item 50 and its sub-items.
type UserInformation struct {
	MaxPDULength               uint32 // 0 = no limit
	HasMaxPDULength            bool   // the 51 sub-item was present (it is mandatory)
	ImplementationClassUID     string
	ImplementationVersionName  string
	AsyncOperations            *AsyncOperationsWindow
	RoleSelections             []RoleSelection
	ExtendedNegotiations       []SOPClassExtendedNegotiation
	CommonExtendedNegotiations []SOPClassCommonExtendedNegotiation
	UserIdentityRQ             *UserIdentityRQ
	UserIdentityAC             *UserIdentityAC
}

// EchoFields are bytes 11-74 of an A-ASSOCIATE-RQ: its Called-AE-title and Calling-AE-title fields as sent,
// padding and all, and 32 reserved bytes. An A-ASSOCIATE-AC carries them back unchanged: PS3.8 Table 9-17 has
// its bytes 11-74 "sent with a value identical to the value received in the same field of the A-ASSOCIATE-RQ
// PDU", and not tested when received.
type EchoFields [64]byte

// AssociateRQ is the A-ASSOCIATE-RQ PDU.
type AssociateRQ struct {
	ProtocolVersion      uint16
	CalledAE, CallingAE  string // spaces and NULs trimmed on decode, space padded on encode
	ApplicationContext   string
	PresentationContexts []PresentationContextRQ
	UserInformation      UserInformation
	// Echo is what DecodeAssociateRQ found in bytes 11-74, for the answer (AssociateAC.Echo); encoding ignores it.
	Echo EchoFields
}

// AssociateAC is the A-ASSOCIATE-AC PDU.
type AssociateAC struct {
	ProtocolVersion      uint16
	CalledAE, CallingAE  string // echoed from the RQ; not checked on receipt
	ApplicationContext   string
	PresentationContexts []PresentationContextAC
	UserInformation      UserInformation
	// Echo, when set, is sent as bytes 11-74 (the request's, as received) in place of CalledAE and CallingAE
	// space padded and 32 zero bytes.
	Echo *EchoFields
}

func (*AssociateRQ) Type() Type { return TypeAssociateRQ }
func (*AssociateAC) Type() Type { return TypeAssociateAC }

// AppendBody encodes the RQ's variable field.
func (p *AssociateRQ) AppendBody(dst []byte) ([]byte, error) {
	dst, err := appendAssocHeader(dst, p.ProtocolVersion, p.CalledAE, p.CallingAE, nil, p.ApplicationContext)
	if err != nil {
		return dst, err
	}
	for _, pc := range p.PresentationContexts {
		start := len(dst)
		dst = append(dst, ItemPresentationContextRQ, 0, 0, 0, pc.ID, 0, 0, 0)
		dst = appendStringItem(dst, ItemAbstractSyntax, pc.AbstractSyntax)
		for _, ts := range pc.TransferSyntaxes {
			dst = appendStringItem(dst, ItemTransferSyntax, ts)
		}
		if err := patchItemLen(dst, start); err != nil {
			return dst, err
		}
	}
	return appendUserInfo(dst, &p.UserInformation)
}

// AppendBody encodes the AC's variable field.
func (p *AssociateAC) AppendBody(dst []byte) ([]byte, error) {
	dst, err := appendAssocHeader(dst, p.ProtocolVersion, p.CalledAE, p.CallingAE, p.Echo, p.ApplicationContext)
	if err != nil {
		return dst, err
	}
	for _, pc := range p.PresentationContexts {
		start := len(dst)
		dst = append(dst, ItemPresentationContextAC, 0, 0, 0, pc.ID, 0, pc.Result, 0)
		dst = appendStringItem(dst, ItemTransferSyntax, pc.TransferSyntax)
		if err := patchItemLen(dst, start); err != nil {
			return dst, err
		}
	}
	return appendUserInfo(dst, &p.UserInformation)
}

func appendAE(dst []byte, ae string) ([]byte, error) {
	if len(ae) > 16 {
		return dst, fmt.Errorf("pdu: AE title %q longer than 16: %w", ae, ErrTooLong)
	}
	dst = append(dst, ae...)
	for i := len(ae); i < 16; i++ {
		dst = append(dst, ' ')
	}
	return dst, nil
}

// appendAssocHeader appends the fixed fields of an A-ASSOCIATE-RQ or -AC and its application context item; bytes
// 11-74 are echo when it is set.
func appendAssocHeader(dst []byte, version uint16, called, calling string, echo *EchoFields, appCtx string) ([]byte, error) {
	dst = binary.BigEndian.AppendUint16(dst, version)
	dst = append(dst, 0, 0)
	if echo != nil {
		dst = append(dst, echo[:]...)
	} else {
		var err error
		if dst, err = appendAE(dst, called); err != nil {
			return dst, err
		}
		if dst, err = appendAE(dst, calling); err != nil {
			return dst, err
		}
		dst = append(dst, make([]byte, 32)...)
	}
	return appendStringItem(dst, ItemApplicationContext, appCtx), nil
}

func appendStringItem(dst []byte, typ byte, s string) []byte {
	dst = append(dst, typ, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

func appendLV16(dst []byte, b []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(b)))
	return append(dst, b...)
}

// patchItemLen sets the 16-bit length of the item starting at start.
func patchItemLen(dst []byte, start int) error {
	n := len(dst) - start - 4
	if n > 0xFFFF {
		return fmt.Errorf("pdu: item 0x%02x of %d bytes: %w", dst[start], n, ErrTooLong)
	}
	binary.BigEndian.PutUint16(dst[start+2:], uint16(n))
	return nil
}

func appendUserInfo(dst []byte, u *UserInformation) ([]byte, error) {
	start := len(dst)
	dst = append(dst, ItemUserInformation, 0, 0, 0)
	dst = append(dst, SubItemMaxLength, 0, 0, 4)
	dst = binary.BigEndian.AppendUint32(dst, u.MaxPDULength)
	if u.ImplementationClassUID != "" {
		dst = appendStringItem(dst, SubItemImplementationClassUID, u.ImplementationClassUID)
	}
	if a := u.AsyncOperations; a != nil {
		dst = append(dst, SubItemAsyncOperationsWindow, 0, 0, 4)
		dst = binary.BigEndian.AppendUint16(dst, a.Invoked)
		dst = binary.BigEndian.AppendUint16(dst, a.Performed)
	}
	for _, r := range u.RoleSelections {
		s := len(dst)
		dst = append(dst, SubItemRoleSelection, 0, 0, 0)
		dst = appendLV16(dst, []byte(r.SOPClassUID))
		dst = append(dst, r.SCU, r.SCP)
		if err := patchItemLen(dst, s); err != nil {
			return dst, err
		}
	}
	if u.ImplementationVersionName != "" {
		dst = appendStringItem(dst, SubItemImplementationVersionName, u.ImplementationVersionName)
	}
	for _, e := range u.ExtendedNegotiations {
		s := len(dst)
		dst = append(dst, SubItemSOPClassExtended, 0, 0, 0)
		dst = appendLV16(dst, []byte(e.SOPClassUID))
		dst = append(dst, e.Info...)
		if err := patchItemLen(dst, s); err != nil {
			return dst, err
		}
	}
	for _, e := range u.CommonExtendedNegotiations {
		s := len(dst)
		dst = append(dst, SubItemSOPClassCommonExtended, 0, 0, 0)
		dst = appendLV16(dst, []byte(e.SOPClassUID))
		dst = appendLV16(dst, []byte(e.ServiceClassUID))
		rs := len(dst)
		dst = append(dst, 0, 0)
		for _, uid := range e.RelatedGeneralSOPClassUIDs {
			dst = appendLV16(dst, []byte(uid))
		}
		binary.BigEndian.PutUint16(dst[rs:], uint16(len(dst)-rs-2))
		if err := patchItemLen(dst, s); err != nil {
			return dst, err
		}
	}
	if id := u.UserIdentityRQ; id != nil {
		s := len(dst)
		dst = append(dst, SubItemUserIdentityRQ, 0, 0, 0, id.IdentityType, id.PositiveResponseRequested)
		dst = appendLV16(dst, id.PrimaryField)
		dst = appendLV16(dst, id.SecondaryField)
		if err := patchItemLen(dst, s); err != nil {
			return dst, err
		}
	}
	if id := u.UserIdentityAC; id != nil {
		s := len(dst)
		dst = append(dst, SubItemUserIdentityAC, 0, 0, 0)
		dst = appendLV16(dst, id.ServerResponse)
		if err := patchItemLen(dst, s); err != nil {
			return dst, err
		}
	}
	return dst, patchItemLen(dst, start)
}

// item is one decoded item header and value.
type item struct {
	typ   byte
	value []byte
}

// nextItem splits the first item off b: type(1) reserved(1) length(2) value.
func nextItem(b []byte) (item, []byte, error) {
	if len(b) < 4 {
		return item{}, nil, fmt.Errorf("pdu: truncated item header: %w", ErrMalformed)
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if 4+n > len(b) {
		return item{}, nil, fmt.Errorf("pdu: item 0x%02x length %d runs past its container (%d left): %w", b[0], n, len(b)-4, ErrMalformed)
	}
	return item{typ: b[0], value: b[4 : 4+n]}, b[4+n:], nil
}

// splitLV16 splits a 16-bit length-prefixed field off b.
func splitLV16(b []byte) ([]byte, []byte, error) {
	if len(b) < 2 {
		return nil, nil, fmt.Errorf("pdu: truncated length field: %w", ErrMalformed)
	}
	n := int(binary.BigEndian.Uint16(b))
	if 2+n > len(b) {
		return nil, nil, fmt.Errorf("pdu: field length %d runs past its item: %w", n, ErrMalformed)
	}
	return b[2 : 2+n], b[2+n:], nil
}

// assocFixedLen is the size of the fixed part of A-ASSOCIATE-RQ/AC before the items.
const assocFixedLen = 68

func decodeAssocFixed(body []byte) (version uint16, called, calling string, err error) {
	if len(body) < assocFixedLen {
		return 0, "", "", fmt.Errorf("pdu: A-ASSOCIATE fixed fields (%d bytes): %w", len(body), ErrMalformed)
	}
	return binary.BigEndian.Uint16(body), trimAE(body[4:20]), trimAE(body[20:36]), nil
}

// DecodeAssociateRQ decodes the variable field of an A-ASSOCIATE-RQ.
func DecodeAssociateRQ(body []byte) (*AssociateRQ, error) {
	v, called, calling, err := decodeAssocFixed(body)
	if err != nil {
		return nil, err
	}
	p := &AssociateRQ{ProtocolVersion: v, CalledAE: called, CallingAE: calling}
	copy(p.Echo[:], body[4:assocFixedLen])
	var seen [256]bool
	rest := body[assocFixedLen:]
	for len(rest) > 0 {
		var it item
		if it, rest, err = nextItem(rest); err != nil {
			return nil, fmt.Errorf("pdu: A-ASSOCIATE-RQ: %w", err)
		}
		switch it.typ {
		case ItemApplicationContext:
			p.ApplicationContext = trimUID(it.value)
		case ItemPresentationContextRQ:
			pc, err := decodePresentationContextRQ(it.value)
			if err != nil {
				return nil, fmt.Errorf("pdu: A-ASSOCIATE-RQ: %w", err)
			}
			// The ids are odd (Table 9-13: "odd integers between 1 and 255") and each unused before on the
			// association (§7.1.1.13). Any other id cannot be answered: the A-ASSOCIATE-AC must carry it back as
			// an odd id (Table 9-18), one result per proposed context (§7.1.1.14). Such a request is an invalid
			// PDU (Evt19), aborted rather than half-negotiated.
			if pc.ID%2 == 0 {
				return nil, fmt.Errorf("pdu: A-ASSOCIATE-RQ: presentation context id %d is even: %w", pc.ID, ErrMalformed)
			}
			if seen[pc.ID] {
				return nil, fmt.Errorf("pdu: A-ASSOCIATE-RQ: presentation context id %d proposed twice: %w", pc.ID, ErrMalformed)
			}
			seen[pc.ID] = true
			p.PresentationContexts = append(p.PresentationContexts, pc)
		case ItemUserInformation:
			if err := decodeUserInfo(&p.UserInformation, it.value); err != nil {
				return nil, fmt.Errorf("pdu: A-ASSOCIATE-RQ: %w", err)
			}
		}
	}
	// One or more presentation context items (Table 9-11); an A-ASSOCIATE-AC
	// needs one too (Table 9-17), so a request without any cannot be
	// answered within the standard: an invalid PDU, as an even id is.
	if len(p.PresentationContexts) == 0 {
		return nil, fmt.Errorf("pdu: A-ASSOCIATE-RQ: no presentation context item: %w", ErrMalformed)
	}
	return p, nil
}

func decodePresentationContextRQ(b []byte) (PresentationContextRQ, error) {
	if len(b) < 4 {
		return PresentationContextRQ{}, fmt.Errorf("pdu: presentation context item: %w", ErrMalformed)
	}
	pc := PresentationContextRQ{ID: b[0]}
	rest := b[4:]
	for len(rest) > 0 {
		it, r, err := nextItem(rest)
		if err != nil {
			return pc, fmt.Errorf("pdu: presentation context %d: %w", pc.ID, err)
		}
		rest = r
		switch it.typ {
		case ItemAbstractSyntax:
			pc.AbstractSyntax = trimUID(it.value)
		case ItemTransferSyntax:
			pc.TransferSyntaxes = append(pc.TransferSyntaxes, trimUID(it.value))
		}
	}
	return pc, nil
}

// DecodeAssociateAC decodes the variable field of an A-ASSOCIATE-AC.
func DecodeAssociateAC(body []byte) (*AssociateAC, error) {
	v, called, calling, err := decodeAssocFixed(body)
	if err != nil {
		return nil, err
	}
	p := &AssociateAC{ProtocolVersion: v, CalledAE: called, CallingAE: calling}
	rest := body[assocFixedLen:]
	for len(rest) > 0 {
		var it item
		if it, rest, err = nextItem(rest); err != nil {
			return nil, fmt.Errorf("pdu: A-ASSOCIATE-AC: %w", err)
		}
		switch it.typ {
		case ItemApplicationContext:
			p.ApplicationContext = trimUID(it.value)
		case ItemPresentationContextAC:
			if len(it.value) < 4 {
				return nil, fmt.Errorf("pdu: A-ASSOCIATE-AC: presentation context item: %w", ErrMalformed)
			}
			pc := PresentationContextAC{ID: it.value[0], Result: it.value[2]}
			sub := it.value[4:]
			for len(sub) > 0 {
				var si item
				if si, sub, err = nextItem(sub); err != nil {
					return nil, fmt.Errorf("pdu: A-ASSOCIATE-AC: presentation context %d: %w", pc.ID, err)
				}
				if si.typ == ItemTransferSyntax {
					pc.TransferSyntax = trimUID(si.value)
				}
			}
			p.PresentationContexts = append(p.PresentationContexts, pc)
		case ItemUserInformation:
			if err := decodeUserInfo(&p.UserInformation, it.value); err != nil {
				return nil, fmt.Errorf("pdu: A-ASSOCIATE-AC: %w", err)
			}
		}
	}
	return p, nil
}

func decodeUserInfo(u *UserInformation, b []byte) error {
	for len(b) > 0 {
		it, rest, err := nextItem(b)
		if err != nil {
			return fmt.Errorf("user information: %w", err)
		}
		b = rest
		v := it.value
		switch it.typ {
		case SubItemMaxLength:
			if len(v) < 4 {
				return fmt.Errorf("user information: maximum length sub-item: %w", ErrMalformed)
			}
			u.MaxPDULength = binary.BigEndian.Uint32(v)
			u.HasMaxPDULength = true
		case SubItemImplementationClassUID:
			u.ImplementationClassUID = trimUID(v)
		case SubItemImplementationVersionName:
			u.ImplementationVersionName = strings.Trim(string(v), " \x00")
		case SubItemAsyncOperationsWindow:
			if len(v) < 4 {
				return fmt.Errorf("user information: asynchronous operations window: %w", ErrMalformed)
			}
			u.AsyncOperations = &AsyncOperationsWindow{Invoked: binary.BigEndian.Uint16(v), Performed: binary.BigEndian.Uint16(v[2:])}
		case SubItemRoleSelection:
			uid, r, err := splitLV16(v)
			if err != nil || len(r) < 2 {
				return fmt.Errorf("user information: role selection: %w", ErrMalformed)
			}
			u.RoleSelections = append(u.RoleSelections, RoleSelection{SOPClassUID: trimUID(uid), SCU: r[0], SCP: r[1]})
		case SubItemSOPClassExtended:
			uid, r, err := splitLV16(v)
			if err != nil {
				return fmt.Errorf("user information: SOP class extended negotiation: %w", err)
			}
			u.ExtendedNegotiations = append(u.ExtendedNegotiations, SOPClassExtendedNegotiation{SOPClassUID: trimUID(uid), Info: r})
		case SubItemSOPClassCommonExtended:
			uid, r, err := splitLV16(v)
			if err != nil {
				return fmt.Errorf("user information: SOP class common extended negotiation: %w", err)
			}
			svc, r, err := splitLV16(r)
			if err != nil {
				return fmt.Errorf("user information: SOP class common extended negotiation: %w", err)
			}
			e := SOPClassCommonExtendedNegotiation{SOPClassUID: trimUID(uid), ServiceClassUID: trimUID(svc)}
			if len(r) > 0 {
				rel, _, err := splitLV16(r)
				if err != nil {
					return fmt.Errorf("user information: SOP class common extended negotiation: %w", err)
				}
				for len(rel) > 0 {
					var one []byte
					if one, rel, err = splitLV16(rel); err != nil {
						return fmt.Errorf("user information: related general SOP classes: %w", err)
					}
					e.RelatedGeneralSOPClassUIDs = append(e.RelatedGeneralSOPClassUIDs, trimUID(one))
				}
			}
			u.CommonExtendedNegotiations = append(u.CommonExtendedNegotiations, e)
		case SubItemUserIdentityRQ:
			if len(v) < 2 {
				return fmt.Errorf("user information: user identity: %w", ErrMalformed)
			}
			id := &UserIdentityRQ{IdentityType: v[0], PositiveResponseRequested: v[1]}
			var r []byte
			if id.PrimaryField, r, err = splitLV16(v[2:]); err != nil {
				return fmt.Errorf("user information: user identity: %w", err)
			}
			if len(r) > 0 {
				if id.SecondaryField, _, err = splitLV16(r); err != nil {
					return fmt.Errorf("user information: user identity: %w", err)
				}
			}
			u.UserIdentityRQ = id
		case SubItemUserIdentityAC:
			resp, _, err := splitLV16(v)
			if err != nil {
				return fmt.Errorf("user information: user identity response: %w", err)
			}
			u.UserIdentityAC = &UserIdentityAC{ServerResponse: resp}
		}
	}
	return nil
}
