package dimse

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
)

// Command field values (0000,0100). A response's is its request's with responseBit set (ResponseField).
const (
	CStoreRQ  uint16 = 0x0001
	CStoreRSP        = CStoreRQ | responseBit
	CGetRQ    uint16 = 0x0010
	CFindRQ   uint16 = 0x0020
	CMoveRQ   uint16 = 0x0021
	CEchoRQ   uint16 = 0x0030
	CEchoRSP         = CEchoRQ | responseBit
	CCancelRQ uint16 = 0x0FFF

	NEventReportRQ  uint16 = 0x0100
	NEventReportRSP        = NEventReportRQ | responseBit
	NActionRQ       uint16 = 0x0130
	NActionRSP             = NActionRQ | responseBit
)

// responseBit is the bit of the Command Field that only a response's has (PS3.7 E.1: 0001H C-STORE-RQ, 8001H
// C-STORE-RSP, …).
const responseBit uint16 = 0x8000

// IsResponse reports whether a Command Field is a response's.
func IsResponse(field uint16) bool { return field&responseBit != 0 }

// ResponseField is the Command Field of the response to a request whose field is request: the one rule of the
// response a requestor awaits and of the response a receiver builds.
func ResponseField(request uint16) uint16 { return request | responseBit }

// CommandDataSetType (0000,0800): NoDataSet means no dataset follows; any other value means one does.
const NoDataSet uint16 = 0x0101

// Priorities (0000,0700).
const (
	PriorityMedium uint16 = 0x0000
	PriorityHigh   uint16 = 0x0001
	PriorityLow    uint16 = 0x0002
)

// Tags of the command elements this package knows, as (0000,eeee) element numbers.
const (
	tagGroupLength             = 0x0000
	tagAffectedSOPClassUID     = 0x0002
	tagRequestedSOPClassUID    = 0x0003
	tagCommandField            = 0x0100
	tagMessageID               = 0x0110
	tagMessageIDBeingResponded = 0x0120
	tagMoveDestination         = 0x0600
	tagPriority                = 0x0700
	tagCommandDataSetType      = 0x0800
	tagStatus                  = 0x0900
	tagErrorComment            = 0x0902
	tagAffectedSOPInstanceUID  = 0x1000
	tagRequestedSOPInstanceUID = 0x1001
	tagEventTypeID             = 0x1002
	tagActionTypeID            = 0x1008
	tagMoveOriginatorAE        = 0x1030
	tagMoveOriginatorMessageID = 0x1031
)

// Presence bits for the optional fields of Command.
const (
	HasAffectedSOPClassUID uint32 = 1 << iota
	HasCommandField
	HasMessageID
	HasMessageIDBeingRespondedTo
	HasPriority
	HasCommandDataSetType
	HasStatus
	HasErrorComment
	HasAffectedSOPInstanceUID
	HasMoveOriginatorAETitle
	HasMoveOriginatorMessageID
	HasRequestedSOPClassUID
	HasRequestedSOPInstanceUID
	HasEventTypeID
	HasActionTypeID
)

// ErrMalformed marks a command set that cannot be decoded.
var ErrMalformed = errors.New("dimse: malformed command set")

// Command is a decoded DIMSE command set. Only the fields used by C-ECHO, C-STORE, N-ACTION and N-EVENT-REPORT
// are kept; other elements are skipped on decode. Present records which elements were found (Has* bits); Encode writes the elements whose
// bits are set.
type Command struct {
	Present                   uint32
	AffectedSOPClassUID       string
	CommandField              uint16
	MessageID                 uint16
	MessageIDBeingRespondedTo uint16
	Priority                  uint16
	CommandDataSetType        uint16
	Status                    uint16
	ErrorComment              string
	AffectedSOPInstanceUID    string
	MoveOriginatorAETitle     string
	MoveOriginatorMessageID   uint16
	// Requested SOP Class/Instance UID (0000,0003)/(0000,1001) name the SOP instance an N-ACTION-RQ acts on;
	// EventTypeID (0000,1002) and ActionTypeID (0000,1008) are N-EVENT-REPORT's and N-ACTION's.
	RequestedSOPClassUID    string
	RequestedSOPInstanceUID string
	EventTypeID             uint16
	ActionTypeID            uint16
}

// HasDataSet reports whether a dataset follows the command.
func (c *Command) HasDataSet() bool {
	return c.Present&HasCommandDataSetType != 0 && c.CommandDataSetType != NoDataSet
}

// Has reports whether all bits in mask are present.
func (c *Command) Has(mask uint32) bool { return c.Present&mask == mask }

// Decode parses an Implicit VR Little Endian group 0000 command set. Unknown elements are skipped; an element
// outside group 0000, a length running past the end, or no Command Field (0000,0100), which every command has
// (PS3.7 9.3, 10.3) and without which a message is neither a request nor a response, is an error. UIDs lose
// trailing NUL/space padding, AE titles their surrounding spaces.
func Decode(b []byte) (*Command, error) {
	c := &Command{}
	if err := c.decode(b); err != nil {
		return c, err
	}
	if !c.Has(HasCommandField) {
		return c, fmt.Errorf("dimse: decode: no Command Field (0000,0100): %w", ErrMalformed)
	}
	return c, nil
}

func (c *Command) decode(b []byte) error {
	*c = Command{}
	for len(b) > 0 {
		if len(b) < 8 {
			return fmt.Errorf("dimse: decode: truncated element header: %w", ErrMalformed)
		}
		group := binary.LittleEndian.Uint16(b)
		elem := binary.LittleEndian.Uint16(b[2:])
		n := binary.LittleEndian.Uint32(b[4:])
		if group != 0x0000 {
			return fmt.Errorf("dimse: decode: element (%04X,%04X) outside group 0000: %w", group, elem, ErrMalformed)
		}
		if uint64(n) > uint64(len(b)-8) {
			return fmt.Errorf("dimse: decode: element (0000,%04X) length %d runs past the command set: %w", elem, n, ErrMalformed)
		}
		v := b[8 : 8+n]
		b = b[8+n:]
		us := func(mask uint32, dst *uint16) error {
			if len(v) != 2 {
				return fmt.Errorf("dimse: decode: (0000,%04X) is US but has %d bytes: %w", elem, len(v), ErrMalformed)
			}
			*dst = binary.LittleEndian.Uint16(v)
			c.Present |= mask
			return nil
		}
		var err error
		switch elem {
		case tagAffectedSOPClassUID:
			c.AffectedSOPClassUID = trimUID(v)
			c.Present |= HasAffectedSOPClassUID
		case tagCommandField:
			err = us(HasCommandField, &c.CommandField)
		case tagMessageID:
			err = us(HasMessageID, &c.MessageID)
		case tagMessageIDBeingResponded:
			err = us(HasMessageIDBeingRespondedTo, &c.MessageIDBeingRespondedTo)
		case tagPriority:
			err = us(HasPriority, &c.Priority)
		case tagCommandDataSetType:
			err = us(HasCommandDataSetType, &c.CommandDataSetType)
		case tagStatus:
			err = us(HasStatus, &c.Status)
		case tagErrorComment:
			c.ErrorComment = strings.TrimRight(string(v), " \x00")
			c.Present |= HasErrorComment
		case tagAffectedSOPInstanceUID:
			c.AffectedSOPInstanceUID = trimUID(v)
			c.Present |= HasAffectedSOPInstanceUID
		case tagMoveOriginatorAE:
			c.MoveOriginatorAETitle = strings.Trim(string(v), " \x00")
			c.Present |= HasMoveOriginatorAETitle
		case tagMoveOriginatorMessageID:
			err = us(HasMoveOriginatorMessageID, &c.MoveOriginatorMessageID)
		case tagRequestedSOPClassUID:
			c.RequestedSOPClassUID = trimUID(v)
			c.Present |= HasRequestedSOPClassUID
		case tagRequestedSOPInstanceUID:
			c.RequestedSOPInstanceUID = trimUID(v)
			c.Present |= HasRequestedSOPInstanceUID
		case tagEventTypeID:
			err = us(HasEventTypeID, &c.EventTypeID)
		case tagActionTypeID:
			err = us(HasActionTypeID, &c.ActionTypeID)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func trimUID(v []byte) string { return strings.TrimRight(string(v), " \x00") }

// Append encodes the command set (group length first, elements ascending) and appends it to dst.
func (c *Command) Append(dst []byte) []byte {
	start := len(dst)
	dst = appendElem(dst, tagGroupLength, []byte{0, 0, 0, 0})
	body := len(dst)
	if c.Present&HasAffectedSOPClassUID != 0 {
		dst = appendUID(dst, tagAffectedSOPClassUID, c.AffectedSOPClassUID)
	}
	if c.Present&HasRequestedSOPClassUID != 0 {
		dst = appendUID(dst, tagRequestedSOPClassUID, c.RequestedSOPClassUID)
	}
	if c.Present&HasCommandField != 0 {
		dst = appendUS(dst, tagCommandField, c.CommandField)
	}
	if c.Present&HasMessageID != 0 {
		dst = appendUS(dst, tagMessageID, c.MessageID)
	}
	if c.Present&HasMessageIDBeingRespondedTo != 0 {
		dst = appendUS(dst, tagMessageIDBeingResponded, c.MessageIDBeingRespondedTo)
	}
	if c.Present&HasPriority != 0 {
		dst = appendUS(dst, tagPriority, c.Priority)
	}
	if c.Present&HasCommandDataSetType != 0 {
		dst = appendUS(dst, tagCommandDataSetType, c.CommandDataSetType)
	}
	if c.Present&HasStatus != 0 {
		dst = appendUS(dst, tagStatus, c.Status)
	}
	if c.Present&HasErrorComment != 0 && c.ErrorComment != "" {
		s := c.ErrorComment
		if len(s) > MaxCommentLen {
			s = s[:MaxCommentLen]
		}
		dst = appendPadded(dst, tagErrorComment, s, ' ')
	}
	if c.Present&HasAffectedSOPInstanceUID != 0 {
		dst = appendUID(dst, tagAffectedSOPInstanceUID, c.AffectedSOPInstanceUID)
	}
	if c.Present&HasRequestedSOPInstanceUID != 0 {
		dst = appendUID(dst, tagRequestedSOPInstanceUID, c.RequestedSOPInstanceUID)
	}
	if c.Present&HasEventTypeID != 0 {
		dst = appendUS(dst, tagEventTypeID, c.EventTypeID)
	}
	if c.Present&HasActionTypeID != 0 {
		dst = appendUS(dst, tagActionTypeID, c.ActionTypeID)
	}
	if c.Present&HasMoveOriginatorAETitle != 0 {
		dst = appendPadded(dst, tagMoveOriginatorAE, c.MoveOriginatorAETitle, ' ')
	}
	if c.Present&HasMoveOriginatorMessageID != 0 {
		dst = appendUS(dst, tagMoveOriginatorMessageID, c.MoveOriginatorMessageID)
	}
	binary.LittleEndian.PutUint32(dst[start+8:], uint32(len(dst)-body))
	return dst
}

// Encode returns the encoded command set.
func (c *Command) Encode() []byte { return c.Append(nil) }

func appendElem(dst []byte, elem uint16, v []byte) []byte {
	dst = append(dst, 0, 0)
	dst = binary.LittleEndian.AppendUint16(dst, elem)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(v)))
	return append(dst, v...)
}

func appendUS(dst []byte, elem, v uint16) []byte {
	dst = append(dst, 0, 0)
	dst = binary.LittleEndian.AppendUint16(dst, elem)
	dst = binary.LittleEndian.AppendUint32(dst, 2)
	return binary.LittleEndian.AppendUint16(dst, v)
}

func appendUID(dst []byte, elem uint16, uid string) []byte { return appendPadded(dst, elem, uid, 0) }

func appendPadded(dst []byte, elem uint16, s string, pad byte) []byte {
	n := len(s) + len(s)&1
	dst = append(dst, 0, 0)
	dst = binary.LittleEndian.AppendUint16(dst, elem)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(n))
	dst = append(dst, s...)
	if len(s)&1 == 1 {
		dst = append(dst, pad)
	}
	return dst
}

// NewCEchoRSP builds the C-ECHO-RSP for a request.
func NewCEchoRSP(rq *Command, status Status) *Command {
	c := &Command{
		Present:                   HasAffectedSOPClassUID | HasCommandField | HasMessageIDBeingRespondedTo | HasCommandDataSetType | HasStatus,
		AffectedSOPClassUID:       "1.2.840.10008.1.1",
		CommandField:              CEchoRSP,
		MessageIDBeingRespondedTo: rq.MessageID,
		CommandDataSetType:        NoDataSet,
		Status:                    status.Code,
	}
	c.setErrorComment(status)
	return c
}

// setErrorComment carries a failure's comment in Error Comment (0000,0902);
// a success carries none.
func (c *Command) setErrorComment(status Status) {
	if status.Comment != "" && status.Code != StatusSuccess {
		c.Present |= HasErrorComment
		c.ErrorComment = status.Comment
	}
}

// NewCStoreRSP builds the C-STORE-RSP for a request, echoing its Affected SOP Class/Instance UID.
func NewCStoreRSP(rq *Command, status Status) *Command {
	c := &Command{
		Present: HasAffectedSOPClassUID | HasCommandField | HasMessageIDBeingRespondedTo | HasCommandDataSetType |
			HasStatus | HasAffectedSOPInstanceUID,
		AffectedSOPClassUID:       rq.AffectedSOPClassUID,
		CommandField:              CStoreRSP,
		MessageIDBeingRespondedTo: rq.MessageID,
		CommandDataSetType:        NoDataSet,
		Status:                    status.Code,
		AffectedSOPInstanceUID:    rq.AffectedSOPInstanceUID,
	}
	c.echoValidUIDs()
	c.setErrorComment(status)
	return c
}

// NewUnrecognizedRSP builds the response to a request the receiver does not
// provide (status 0211, unrecognized operation): the request's command
// field with the response bit set, its Affected SOP Class UID echoed.
func NewUnrecognizedRSP(rq *Command) *Command {
	c := &Command{
		Present: HasAffectedSOPClassUID | HasCommandField | HasMessageIDBeingRespondedTo |
			HasCommandDataSetType | HasStatus,
		AffectedSOPClassUID: rq.AffectedSOPClassUID, CommandField: ResponseField(rq.CommandField),
		MessageIDBeingRespondedTo: rq.MessageID, CommandDataSetType: NoDataSet,
		Status: StatusUnrecognizedOperation,
	}
	c.echoValidUIDs()
	return c
}

// echoValidUIDs leaves out of a response the Affected SOP Class and
// Instance UIDs it echoes from its request that are no valid UID
// (dicomuid.ValidUID: at most 64 characters, components of digits with
// no leading zero): a response's are U(=) in PS3.7 (U in an N-ACTION-RSP
// and an N-EVENT-REPORT-RSP), which a response may leave out, and a
// request's element may be up to its command set's size (a 60,000-byte
// "UID" was echoed whole), or a value that is no UID at all.
func (c *Command) echoValidUIDs() {
	if c.Has(HasAffectedSOPClassUID) && !dicomuid.ValidUID(c.AffectedSOPClassUID) {
		c.Present &^= HasAffectedSOPClassUID
		c.AffectedSOPClassUID = ""
	}
	if c.Has(HasAffectedSOPInstanceUID) && !dicomuid.ValidUID(c.AffectedSOPInstanceUID) {
		c.Present &^= HasAffectedSOPInstanceUID
		c.AffectedSOPInstanceUID = ""
	}
}

// NewCStoreRQ builds a C-STORE-RQ.
func NewCStoreRQ(messageID uint16, sopClassUID, sopInstanceUID string, priority uint16) *Command {
	return &Command{
		Present: HasAffectedSOPClassUID | HasCommandField | HasMessageID | HasPriority | HasCommandDataSetType |
			HasAffectedSOPInstanceUID,
		AffectedSOPClassUID:    sopClassUID,
		CommandField:           CStoreRQ,
		MessageID:              messageID,
		Priority:               priority,
		CommandDataSetType:     0x0000,
		AffectedSOPInstanceUID: sopInstanceUID,
	}
}

// NewCEchoRQ builds a C-ECHO-RQ.
func NewCEchoRQ(messageID uint16) *Command {
	return &Command{
		Present:             HasAffectedSOPClassUID | HasCommandField | HasMessageID | HasCommandDataSetType,
		AffectedSOPClassUID: "1.2.840.10008.1.1",
		CommandField:        CEchoRQ,
		MessageID:           messageID,
		CommandDataSetType:  NoDataSet,
	}
}

// NewNActionRQ builds an N-ACTION-RQ on the SOP instance (class, instance) with a data set (Action Information)
// following.
func NewNActionRQ(messageID uint16, sopClassUID, sopInstanceUID string, actionTypeID uint16) *Command {
	return &Command{
		Present: HasRequestedSOPClassUID | HasCommandField | HasMessageID | HasCommandDataSetType |
			HasRequestedSOPInstanceUID | HasActionTypeID,
		RequestedSOPClassUID:    sopClassUID,
		CommandField:            NActionRQ,
		MessageID:               messageID,
		CommandDataSetType:      0x0000,
		RequestedSOPInstanceUID: sopInstanceUID,
		ActionTypeID:            actionTypeID,
	}
}

// NewNActionRSP builds the N-ACTION-RSP for a request, without an Action Reply: the affected SOP class and
// instance are the requested ones, and the Action Type ID is echoed when the request had one.
func NewNActionRSP(rq *Command, status Status) *Command {
	c := &Command{
		Present: HasAffectedSOPClassUID | HasCommandField | HasMessageIDBeingRespondedTo | HasCommandDataSetType |
			HasStatus | HasAffectedSOPInstanceUID,
		AffectedSOPClassUID:       rq.RequestedSOPClassUID,
		CommandField:              NActionRSP,
		MessageIDBeingRespondedTo: rq.MessageID,
		CommandDataSetType:        NoDataSet,
		Status:                    status.Code,
		AffectedSOPInstanceUID:    rq.RequestedSOPInstanceUID,
	}
	if rq.Has(HasActionTypeID) {
		c.Present |= HasActionTypeID
		c.ActionTypeID = rq.ActionTypeID
	}
	c.echoValidUIDs()
	c.setErrorComment(status)
	return c
}

// NewNEventReportRQ builds an N-EVENT-REPORT-RQ about the SOP instance (class, instance) with a data set (Event
// Information) following.
func NewNEventReportRQ(messageID uint16, sopClassUID, sopInstanceUID string, eventTypeID uint16) *Command {
	return &Command{
		Present: HasAffectedSOPClassUID | HasCommandField | HasMessageID | HasCommandDataSetType |
			HasAffectedSOPInstanceUID | HasEventTypeID,
		AffectedSOPClassUID:    sopClassUID,
		CommandField:           NEventReportRQ,
		MessageID:              messageID,
		CommandDataSetType:     0x0000,
		AffectedSOPInstanceUID: sopInstanceUID,
		EventTypeID:            eventTypeID,
	}
}

// NewNEventReportRSP builds the N-EVENT-REPORT-RSP for a request, without an Event Reply.
func NewNEventReportRSP(rq *Command, status Status) *Command {
	c := &Command{
		Present: HasAffectedSOPClassUID | HasCommandField | HasMessageIDBeingRespondedTo | HasCommandDataSetType |
			HasStatus | HasAffectedSOPInstanceUID | HasEventTypeID,
		AffectedSOPClassUID:       rq.AffectedSOPClassUID,
		CommandField:              NEventReportRSP,
		MessageIDBeingRespondedTo: rq.MessageID,
		CommandDataSetType:        NoDataSet,
		Status:                    status.Code,
		AffectedSOPInstanceUID:    rq.AffectedSOPInstanceUID,
		EventTypeID:               rq.EventTypeID,
	}
	c.echoValidUIDs()
	c.setErrorComment(status)
	return c
}
