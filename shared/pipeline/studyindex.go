package pipeline

// The study index's rules, in one place. The three IndexStore
// implementations (shared/awsadapters on DynamoDB, shared/localstore on
// SQLite, the in-memory fake in pipelinetest) keep their own storage but
// decide with these functions, and pipelinetest.RunIndexStore runs one
// conformance suite against all three.

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// CodePatientMismatch is the finding on an instance whose Patient ID,
// Patient's Name or Patient's Birth Date disagrees with the study it was
// indexed into, and on that study.
const CodePatientMismatch = "patient-mismatch"

// FirstContent is the content first indexed under a SOP Instance UID, in
// any study: its identity and the study it named.
type FirstContent struct {
	ContentIdentity  string // "" if none was indexed
	StudyInstanceUID string
}

// ContentOutcome is the conflict rule: the first content indexed under a
// SOP Instance UID, in any study, is new; any other content under that
// UID is a conflict, in the same study or in another one. The first
// content's identity naming another study is other content too: the
// identity is a checksum of bytes that hold the Study Instance UID, so
// equal identities naming two studies are two objects whose checksums
// collide.
//
// The rule is global because a SOP Instance UID names one instance world
// wide (PS3.5 section 9): a second content under it, wherever its Study
// Instance UID points, is a corrected resend or a UID collision, and a
// consumer keyed on the UID (a viewer, a DICOMweb store) would replace or
// mix the two. Counting it new in the other study would also count one
// instance twice across the archive.
func ContentOutcome(first FirstContent, in InstanceRecord) UpsertOutcome {
	switch {
	case first.ContentIdentity == "":
		return InstanceNew
	case first.ContentIdentity != in.ContentIdentity:
		return InstanceConflict
	case first.StudyInstanceUID != "" && first.StudyInstanceUID != in.StudyInstanceUID:
		return InstanceConflict
	}
	return InstanceNew
}

// Resent is the resend rule: a delivery the index found a duplicate of
// (UpsertResult.Instance, the record indexed first, unchanged) is another
// transfer of content already held when it comes under another object key
// (an identical resend the store kept, received on another day), and the
// same transfer again when it comes under the indexed record's key (a
// redelivery, a retry). Each transfer gets its own audit record; a
// redelivery writes nothing new.
func Resent(indexed, delivered InstanceRecord) bool {
	return delivered.ObjectKey != "" && indexed.ObjectKey != delivered.ObjectKey
}

// NoteResend folds a duplicate delivery into s, the study it names: a
// resend (Resent(indexed, delivered): another transfer of content held)
// received after the study was last sent moves LastSent to its receipt,
// and nothing else moves (no count, Revision, LastReceived or activity:
// the content is held, its announcement is the counted transfer's). A
// redelivery moves nothing. It reports whether s changed, for the index
// to write it.
func (s *StudySummary) NoteResend(indexed, delivered InstanceRecord) bool {
	return Resent(indexed, delivered) && s.NoteSent(delivered.ReceivedAt)
}

// NoteSent moves LastSent to at when at is after Sent(), and reports
// whether it did.
func (s *StudySummary) NoteSent(at time.Time) bool {
	if !at.After(s.Sent()) {
		return false
	}
	s.LastSent = at
	return true
}

// patientCheck is one patient attribute on which a study's instances must
// agree.
type patientCheck struct {
	tag, name string
	field     func(*StudySummary) *string
	of        func(InstanceRecord) string
	same      func(a, b string) bool
}

var patientChecks = []patientCheck{
	{"(0010,0020)", "Patient ID", func(s *StudySummary) *string { return &s.PatientID },
		func(in InstanceRecord) string { return in.PatientID }, sameText},
	{"(0010,0010)", "Patient's Name", func(s *StudySummary) *string { return &s.PatientName },
		func(in InstanceRecord) string { return IndexedPersonName(in.PatientName) }, samePersonName},
	{"(0010,0030)", "Patient's Birth Date", func(s *StudySummary) *string { return &s.PatientBirthDate },
		func(in InstanceRecord) string { return in.PatientBirthDate }, sameText},
}

func sameText(a, b string) bool { return strings.TrimSpace(a) == strings.TrimSpace(b) }

// samePersonName compares the alphabetic groups of two PN values,
// component by component, ignoring case, padding and trailing empty
// components: "DOE^JOHN^^" and "Doe^John" name one person as two systems
// write it; a difference there is formatting, not another patient. A name
// with no alphabetic group (ideographic only) is compared whole.
func samePersonName(a, b string) bool {
	norm := func(v string) string {
		if g, _, _ := strings.Cut(v, "="); strings.TrimSpace(g) != "" {
			v = g
		}
		parts := strings.Split(v, "^")
		for i := range parts {
			parts[i] = strings.ToUpper(strings.Join(strings.Fields(parts[i]), " "))
		}
		for len(parts) > 0 && parts[len(parts)-1] == "" {
			parts = parts[:len(parts)-1]
		}
		return strings.Join(parts, "^")
	}
	return norm(a) == norm(b)
}

// Merge folds the attributes of in, a new or conflicting instance of the
// study, into s; Count does the counters. It returns the findings the
// index adds to in. The rules:
//
//   - FirstReceived and LastReceived widen to include in.ReceivedAt, in any
//     delivery order; LastSent moves forward to it; LastActivity moves
//     forward to in.Activity().
//   - Modalities and CallingAEs are the union over the instances, the
//     modalities within AddModality's bound.
//   - A study attribute (date, time, description, accession number) keeps
//     the first non-empty value indexed: later instances fill it in, never
//     rewrite it.
//   - Patient ID, Patient's Name and Patient's Birth Date must agree: when
//     both in and the study have a value and they differ, in gets a
//     patient-mismatch finding per attribute, the study gets one too, and
//     the study's patient stays as it is (an instance of another patient
//     neither rewrites nor fills it). Otherwise in fills the study's empty
//     patient attributes (Patient's Sex too). Never a silent merge.
//     Patient's Name is taken in the index's form (IndexedPersonName): a
//     name of delimiters alone is no name, which neither fills the study's
//     nor disagrees with it; nor does the study's, which a study indexed
//     before names took that form may hold as sent ("^^^^", "=^^^^="):
//     in's name replaces it.
func (s *StudySummary) Merge(in InstanceRecord) []Finding {
	if IndexedPersonName(s.PatientName) == "" {
		s.PatientName = ""
	}
	if s.StudyInstanceUID == "" {
		s.StudyInstanceUID = in.StudyInstanceUID
	}
	if s.FirstReceived.IsZero() || in.ReceivedAt.Before(s.FirstReceived) {
		s.FirstReceived = in.ReceivedAt
	}
	s.NoteSent(in.ReceivedAt)
	if in.ReceivedAt.After(s.LastReceived) {
		s.LastReceived = in.ReceivedAt
	}
	if at := in.Activity(); at.After(s.LastActivity) {
		s.LastActivity = at
	}
	s.AddModality(in.Modality)
	s.CallingAEs = addSorted(s.CallingAEs, in.CallingAE)
	fill(&s.StudyDate, in.StudyDate)
	fill(&s.StudyTime, in.StudyTime)
	fill(&s.StudyDescription, in.StudyDescription)
	fill(&s.AccessionNumber, in.AccessionNumber)

	var found []Finding
	for _, c := range patientChecks {
		if have, got := *c.field(s), c.of(in); have != "" && got != "" && !c.same(have, got) {
			found = append(found, Finding{Code: CodePatientMismatch, Severity: SeverityWarning, Tag: c.tag,
				Message: c.name + " differs from the study's; the study keeps the value it was first indexed with"})
			s.Findings = AddFinding(s.Findings, Finding{Code: CodePatientMismatch, Severity: SeverityWarning, Tag: c.tag,
				Message: "instances of this study disagree on " + c.name})
		}
	}
	if len(found) > 0 {
		return found
	}
	for _, c := range patientChecks {
		fill(c.field(s), c.of(in))
	}
	fill(&s.PatientSex, in.PatientSex)
	return nil
}

// MaxStudyModalities bounds the modalities a study record keeps, and
// MaxStudyModalityLen the length of one it keeps (the longest value the
// index carries, LO's 64; Modality is a CS of 16): 2 KiB at most. Modality
// is the sender's: with no bound, a sender inventing a value per instance
// grew the study record toward DynamoDB's 400 KB item limit, where every
// later upsert of the study failed. A real study has a handful.
const (
	MaxStudyModalities  = 32
	MaxStudyModalityLen = 64
)

// AddModality adds m to the study's modalities if it is not there and
// fits: fewer than MaxStudyModalities kept and m at most
// MaxStudyModalityLen bytes. One that does not fit sets
// ModalitiesTruncated; StudyDetail.ModalityCount counts them all.
func (s *StudySummary) AddModality(m string) {
	if m == "" || slices.Contains(s.Modalities, m) {
		return
	}
	if len(s.Modalities) >= MaxStudyModalities || len(m) > MaxStudyModalityLen {
		s.ModalitiesTruncated = true
		return
	}
	s.Modalities = addSorted(s.Modalities, m)
}

// ModalityCount is the number of the study's distinct modalities: those
// kept, or, when some were not (ModalitiesTruncated), those of its
// instances, which every indexed content keeps.
func (d StudyDetail) ModalityCount() int {
	if !d.ModalitiesTruncated {
		return len(d.Modalities)
	}
	seen := map[string]bool{}
	for _, m := range d.Modalities {
		seen[m] = true
	}
	for _, in := range d.Instances {
		if in.Modality != "" {
			seen[in.Modality] = true
		}
	}
	return len(seen)
}

// Count moves s's counters for one new or conflicting instance: Revision
// by one, TotalBytes by its size, InstanceCount (new) or ConflictCount
// (conflict), and SeriesCount when it is the first content indexed in its
// series in this study.
func (s *StudySummary) Count(in InstanceRecord, outcome UpsertOutcome, newSeries bool) {
	s.Revision++
	s.TotalBytes += in.Size
	if newSeries {
		s.SeriesCount++
	}
	if outcome == InstanceConflict {
		s.ConflictCount++
	} else {
		s.InstanceCount++
	}
}

// PatientMismatch reports whether s carries a patient-mismatch finding.
func (s StudySummary) PatientMismatch() bool { return HasFinding(s.Findings, CodePatientMismatch) }

// Indexed returns in as the index keeps it after an upsert with outcome:
// its Patient's Name in the index's form (IndexedPersonName, as Merge
// compares and fills it), Conflict is the index's verdict (whatever the SCP flagged) and its
// findings are its own (validation's) followed by found, from Merge. Any
// patient-mismatch finding in already is the index's earlier verdict and
// gives way to found.
func (in InstanceRecord) Indexed(outcome UpsertOutcome, found []Finding) InstanceRecord {
	in.PatientName = IndexedPersonName(in.PatientName)
	in.Conflict = outcome == InstanceConflict
	in.Findings = slices.DeleteFunc(slices.Clone(in.Findings), func(f Finding) bool { return f.Code == CodePatientMismatch })
	in.Findings = append(in.Findings, found...)
	if len(in.Findings) == 0 {
		in.Findings = nil
	}
	return in
}

// AddFinding adds f to a study's findings unless one with its code and tag
// is there, keeping them sorted by code and tag.
func AddFinding(list []Finding, f Finding) []Finding {
	i, found := slices.BinarySearchFunc(list, f, compareFindings)
	if found {
		return list
	}
	return slices.Insert(slices.Clone(list), i, f)
}

func compareFindings(a, b Finding) int {
	return cmp.Or(cmp.Compare(a.Code, b.Code), cmp.Compare(a.Tag, b.Tag))
}

// findingsWith returns the findings of list with code.
func findingsWith(list []Finding, code string) []Finding {
	var out []Finding
	for _, f := range list {
		if f.Code == code {
			out = append(out, f)
		}
	}
	return out
}

// HasFinding reports whether list holds a finding with code.
func HasFinding(list []Finding, code string) bool {
	return slices.ContainsFunc(list, func(f Finding) bool { return f.Code == code })
}

func fill(dst *string, v string) {
	if *dst == "" {
		*dst = v
	}
}

func addSorted(list []string, v string) []string {
	if v == "" {
		return list
	}
	i, found := slices.BinarySearch(list, v)
	if found {
		return list
	}
	return slices.Insert(slices.Clone(list), i, v)
}

// NewStudyDetail assembles a study's detail from its summary, its
// instance records (one per distinct content) and its count of rejected
// instances (RejectedTally's), computing the series from the instances:
//
//   - a series' InstanceCount counts its new instances (conflicting
//     contents are not more instances), TotalBytes and the received times
//     cover every content, and Modality, SeriesNumber and
//     SeriesDescription are the first non-empty values in receipt order;
//   - series are ordered by Series Number (numerically when both are
//     numbers), then Series Instance UID; instances by series in that
//     order, then receipt time, SOP Instance UID and content.
func NewStudyDetail(s StudySummary, instances []InstanceRecord, rejected int) StudyDetail {
	ins := slices.Clone(instances)
	if ins == nil {
		ins = []InstanceRecord{}
	}
	slices.SortFunc(ins, func(a, b InstanceRecord) int {
		return cmp.Or(a.ReceivedAt.Compare(b.ReceivedAt), cmp.Compare(a.SOPInstanceUID, b.SOPInstanceUID), cmp.Compare(a.ContentIdentity, b.ContentIdentity))
	})
	byUID := map[string]*SeriesSummary{}
	var order []*SeriesSummary
	for _, in := range ins {
		ss := byUID[in.SeriesInstanceUID]
		if ss == nil {
			ss = &SeriesSummary{SeriesInstanceUID: in.SeriesInstanceUID, FirstReceived: in.ReceivedAt, LastReceived: in.ReceivedAt}
			byUID[in.SeriesInstanceUID] = ss
			order = append(order, ss)
		}
		fill(&ss.Modality, in.Modality)
		fill(&ss.SeriesNumber, in.SeriesNumber)
		fill(&ss.SeriesDescription, in.SeriesDescription)
		if !in.Conflict {
			ss.InstanceCount++
		}
		ss.TotalBytes += in.Size
		if in.ReceivedAt.After(ss.LastReceived) {
			ss.LastReceived = in.ReceivedAt
		}
	}
	slices.SortFunc(order, func(a, b *SeriesSummary) int {
		return cmp.Or(compareNumbers(a.SeriesNumber, b.SeriesNumber), cmp.Compare(a.SeriesInstanceUID, b.SeriesInstanceUID))
	})
	d := StudyDetail{StudySummary: s, Series: make([]SeriesSummary, 0, len(order)), Instances: ins, RejectedCount: rejected}
	pos := map[string]int{}
	for i, ss := range order {
		pos[ss.SeriesInstanceUID] = i
		d.Series = append(d.Series, *ss)
	}
	// In series order, and in a series by Instance Number (as a viewer
	// shows them; the order of arrival is a sender's directory order),
	// then by arrival.
	slices.SortStableFunc(d.Instances, func(a, b InstanceRecord) int {
		return cmp.Or(cmp.Compare(pos[a.SeriesInstanceUID], pos[b.SeriesInstanceUID]), compareNumbers(a.InstanceNumber, b.InstanceNumber))
	})
	return d
}

// RejectedTally is the rule of StudyDetail.RejectedCount, one rejected
// SOP Instance UID (RecordRejected's) at a time: a rejected UID counts
// unless the study holds an instance of it (a valid resend clears it).
// Each index keeps one note per UID in a study (a key), so a UID is
// added once. It holds the study's instance UIDs, which GetStudy returns
// anyway, never the rejected ones: an index reads its notes a page at a
// time into it, and a study with 100,000 rejects costs their reading, not
// a list of them (on DynamoDB the raw items, tens of MB, were held until
// the count).
type RejectedTally struct {
	held map[string]bool
	n    int
}

// NewRejectedTally starts the tally of a study whose indexed contents are
// instances.
func NewRejectedTally(instances []InstanceRecord) *RejectedTally {
	held := make(map[string]bool, len(instances))
	for _, in := range instances {
		held[in.SOPInstanceUID] = true
	}
	return &RejectedTally{held: held}
}

// Add counts sop, a rejected SOP Instance UID of the study, unless the
// study holds an instance of it.
func (t *RejectedTally) Add(sop string) {
	if !t.held[sop] {
		t.n++
	}
}

// Count is the number of rejected UIDs added that the study holds no
// instance of; 0 for a nil tally (no rejects read).
func (t *RejectedTally) Count() int {
	if t == nil {
		return 0
	}
	return t.n
}

// compareNumbers orders IS values numerically when both are numbers.
func compareNumbers(a, b string) int {
	x, errA := strconv.Atoi(strings.TrimSpace(a))
	y, errB := strconv.Atoi(strings.TrimSpace(b))
	if errA == nil && errB == nil {
		return cmp.Compare(x, y)
	}
	return cmp.Compare(a, b)
}

// CompareStable is the order of StableStudies: quiet the longest first,
// then by Study Instance UID.
func CompareStable(a, b StudySummary) int {
	return cmp.Or(a.Quiet().Compare(b.Quiet()), cmp.Compare(a.StudyInstanceUID, b.StudyInstanceUID))
}
