package auditmessage

import (
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// The tables of PS3.15 A.5.3 for the events dicom-ingest sends, as far as
// a message shows them: the event's action codes and type codes, its
// required active participants and participant objects. Section numbers
// are those of the current edition (2020 to 2025e: A.5.3.7 is DICOM
// Instances Transferred, A.5.3.11 Security Alert). Render checks every
// message against its event's table and sends none that fails it; the
// tests check every rendered message against it too.

// participantRule is one real-world entity of a table's Active Participant
// rows. A participant matches it by its RoleIDCode (when role is set) and
// its UserIsRequestor (when requestor is set).
type participantRule struct {
	name      string
	role      string
	requestor *bool
	min, max  int // max 0: no limit
	// networkAccess: NetworkAccessPointID and its type code are M.
	networkAccess bool
	// aeTitles: AlternativeUserID is MC "if the process supports DICOM"
	// (A.5.2.2), and ours does.
	aeTitles bool
}

// objectRule is one real-world entity of a table's Participant Object rows.
// An object matches it by type code, role and ID type code (each when set;
// an ID type of Defined Terms leaves idType unset).
type objectRule struct {
	name           string
	typeCode, role string
	idType         code // Code and System; zero: any
	min, max       int  // max 0: no limit
	// detail is the type of a ParticipantObjectDetail the object must carry.
	detail string
}

type eventRule struct {
	section string
	name    string
	actions []string // EventActionCode values allowed
	// typeCodes are the DCM EventTypeCodes one of which is required; with
	// anyTypeCode set, some EventTypeCode is required (an extensible
	// context group).
	typeCodes   []string
	anyTypeCode bool
	// participants not matched by any rule must have this UserIsRequestor.
	othersRequestor *bool
	participants    []participantRule
	objects         []objectRule
}

var (
	yes, no = true, false

	studyIDType   = code{Code: codeStudyInstanceUID, System: "DCM"}
	patientIDType = code{Code: "2", System: "RFC-3881"}

	// transferParticipantRules and transferObjectRules are what A.5.3.3 and A.5.3.7 require alike: the process that
	// sent the data and the one that received it, the studies (one or more)
	// and the patient (exactly one: "This message may only include
	// information about a single patient").
	transferParticipantRules = []participantRule{
		{name: "process sending the data (110153 Source Role ID)", role: "110153", min: 1, max: 1},
		{name: "process receiving the data (110152 Destination Role ID)", role: "110152", min: 1, max: 1},
	}
	transferObjectRules = []objectRule{
		{name: "studies being transferred (type 2 System Object, role 3 Report, ID type 110180)", typeCode: "2", role: "3", idType: studyIDType, min: 1},
		{name: "patient (type 1 Person, role 1 Patient, ID type RFC-3881 2 Patient Number)", typeCode: "1", role: "1", idType: patientIDType, min: 1, max: 1},
	}
)

// requirements are the tables by EventID code. An event not listed is
// never sent.
var requirements = map[string]eventRule{
	"110100": {
		section: "A.5.3.1", name: "Application Activity", actions: []string{"E"}, typeCodes: []string{"110120", "110121"},
		participants: []participantRule{{name: "application started or stopped (110150 Application)", role: "110150", min: 1, max: 1, aeTitles: true}},
	},
	"110102": {
		section: "A.5.3.3", name: "Begin Transferring DICOM Instances", actions: []string{"E"},
		participants: transferParticipantRules, objects: transferObjectRules,
	},
	"110104": {
		section: "A.5.3.7", name: "DICOM Instances Transferred", actions: []string{"C", "R", "U"},
		participants: transferParticipantRules, objects: transferObjectRules,
	},
	"110113": {
		section: "A.5.3.11", name: "Security Alert", actions: []string{"E"}, anyTypeCode: true,
		// The reporting process (1..2) is ours, named with role 110150
		// (RoleIDCode is U there); performing processes (0..N) "shall be
		// FALSE".
		participants:    []participantRule{{name: "reporting process (110150 Application)", role: "110150", min: 1, max: 2}},
		othersRequestor: &no,
		objects:         []objectRule{{name: "alert subject (type 2 System Object)", typeCode: "2", detail: "Alert Description"}},
	},
	"110114": {
		section: "A.5.3.12", name: "User Authentication", actions: []string{"E"}, typeCodes: []string{"110122", "110123"},
		participants: []participantRule{{name: "user authenticated (UserIsRequestor)", requestor: &yes, min: 1, max: 1, networkAccess: true}},
	},
}

// Check parses an AuditMessage and checks it against the table of its
// event in PS3.15 A.5.3 (the schema is checked apart, with xmllint in the
// tests). Its errors name the event and what is missing, never a value.
func Check(doc []byte) error {
	var m auditMessage
	if err := xml.Unmarshal(doc, &m); err != nil {
		return fmt.Errorf("auditmessage: check: %w", err)
	}
	return check(m)
}

func check(m auditMessage) error {
	id := m.Event.EventID.Code
	rule, ok := requirements[id]
	if !ok || m.Event.EventID.System != "DCM" {
		return fmt.Errorf("auditmessage: event %s^%s is not one dicom-ingest sends", id, m.Event.EventID.System)
	}
	var errs []error
	fail := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s %s (PS3.15 %s): "+format, append([]any{id, rule.name, rule.section}, a...)...))
	}
	if !slices.Contains(rule.actions, m.Event.ActionCode) {
		fail("EventActionCode %q, want one of %v", m.Event.ActionCode, rule.actions)
	}
	if len(rule.typeCodes) > 0 && !slices.ContainsFunc(m.Event.TypeCodes, func(c code) bool {
		return c.System == "DCM" && slices.Contains(rule.typeCodes, c.Code)
	}) {
		fail("no EventTypeCode of %v", rule.typeCodes)
	}
	if rule.anyTypeCode && len(m.Event.TypeCodes) == 0 {
		fail("no EventTypeCode")
	}
	matched := make([]bool, len(m.Participants))
	for _, r := range rule.participants {
		n := 0
		for i, p := range m.Participants {
			if !r.matches(p) {
				continue
			}
			matched[i] = true
			n++
			if p.UserID == "" {
				fail("%s without UserID", r.name)
			}
			if r.networkAccess && (p.NetworkAccess == "" || p.NetworkType == "") {
				fail("%s without NetworkAccessPointID and its type code", r.name)
			}
			if r.aeTitles && !strings.HasPrefix(p.AlternativeUserID, "AETITLES=") {
				fail("%s without its AE title as AlternativeUserID", r.name)
			}
		}
		if n < r.min || (r.max > 0 && n > r.max) {
			fail("%d participants %s, want %s", n, r.name, count(r.min, r.max))
		}
	}
	if rule.othersRequestor != nil {
		for i, p := range m.Participants {
			if !matched[i] && p.UserIsRequestor != *rule.othersRequestor {
				fail("participant %d: UserIsRequestor must be %v", i+1, *rule.othersRequestor)
			}
		}
	}
	for _, r := range rule.objects {
		n := 0
		for _, o := range m.Objects {
			if !r.matches(o) {
				continue
			}
			n++
			if r.detail != "" && !slices.ContainsFunc(o.Details, func(d valuePair) bool { return d.Type == r.detail && decodes(d.Value) }) {
				fail("%s without a detail %q", r.name, r.detail)
			}
		}
		if n < r.min || (r.max > 0 && n > r.max) {
			fail("%d participant objects %s, want %s", n, r.name, count(r.min, r.max))
		}
	}
	return errors.Join(errs...)
}

func (r participantRule) matches(p activeParticipant) bool {
	if r.role != "" && !slices.ContainsFunc(p.Roles, func(c code) bool { return c.Code == r.role && c.System == "DCM" }) {
		return false
	}
	return r.requestor == nil || p.UserIsRequestor == *r.requestor
}

func (r objectRule) matches(o participantObject) bool {
	return (r.typeCode == "" || o.TypeCode == r.typeCode) && (r.role == "" || o.Role == r.role) &&
		(r.idType.Code == "" || (o.IDType.Code == r.idType.Code && o.IDType.System == r.idType.System))
}

func decodes(v string) bool {
	b, err := base64.StdEncoding.DecodeString(v)
	return err == nil && len(b) > 0
}

func count(lo, hi int) string {
	switch {
	case hi == 0:
		return fmt.Sprintf("%d or more", lo)
	case lo == hi:
		return fmt.Sprint(lo)
	default:
		return fmt.Sprintf("%d to %d", lo, hi)
	}
}
