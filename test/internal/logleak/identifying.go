package logleak

import (
	"fmt"

	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
)

// attribute is an identifying attribute with the value every object
// WriteObjects writes carries in it.
type attribute struct {
	Group, Element uint16
	VR, Name       string
	Value          string
}

func (a attribute) String() string {
	return fmt.Sprintf("%s (%04X,%04X)", a.Name, a.Group, a.Element)
}

// identifying is what a data set tells of its patient, the people who saw
// them, the institution and the device, beyond the UIDs, patient names and
// ids, and birth dates the objects carry otherwise: attributes the Basic
// Application Level Confidentiality Profile removes or replaces (PS3.15
// Annex E, Table E.1-1). It is the one list both ways: WriteObjects writes
// each value into every object, and the Identifiers it fills look for each
// in every log line (a person name also by its components). The values
// are made up so that no line holds one by chance, and fit their VRs
// (SH 16 characters, LO and each PN group 64).
var identifying = []attribute{
	{0x0008, 0x0050, "SH", "Accession Number", "Zqx-Accn-7731"},
	{0x0008, 0x0080, "LO", "Institution Name", "Zqx-Institution-7731"},
	{0x0008, 0x0081, "ST", "Institution Address", "Zqx-InstitutionAddress-7731"},
	{0x0008, 0x0090, "PN", "Referring Physician's Name", "Zqx-Referring-7731^Zqx-RefGiven-7731"},
	{0x0008, 0x0092, "ST", "Referring Physician's Address", "Zqx-ReferringAddress-7731"},
	{0x0008, 0x0094, "SH", "Referring Physician's Telephone Numbers", "Zqx-RefTel-7731"},
	{0x0008, 0x1010, "SH", "Station Name", "Zqx-Station-7731"},
	{0x0008, 0x1030, "LO", "Study Description", "Zqx-StudyDescription-7731"},
	{0x0008, 0x103E, "LO", "Series Description", "Zqx-SeriesDescription-7731"},
	{0x0008, 0x1040, "LO", "Institutional Department Name", "Zqx-Department-7731"},
	{0x0008, 0x1048, "PN", "Physician(s) of Record", "Zqx-OfRecord-7731^Zqx-RecGiven-7731"},
	{0x0008, 0x1050, "PN", "Performing Physician's Name", "Zqx-Performing-7731^Zqx-PerfGiven-7731"},
	{0x0008, 0x1060, "PN", "Name of Physician(s) Reading Study", "Zqx-Reading-7731^Zqx-ReadGiven-7731"},
	{0x0008, 0x1070, "PN", "Operators' Name", "Zqx-Operator-7731^Zqx-OpGiven-7731"},
	{0x0010, 0x1000, "LO", "Other Patient IDs", "Zqx-OtherPatientId-7731"},
	{0x0010, 0x1001, "PN", "Other Patient Names", "Zqx-OtherName-7731^Zqx-OtherGiven-7731"},
	{0x0010, 0x1040, "LO", "Patient's Address", "Zqx-PatientAddress-7731"},
	{0x0010, 0x1090, "LO", "Medical Record Locator", "Zqx-RecordLocator-7731"},
	{0x0010, 0x2154, "SH", "Patient's Telephone Numbers", "Zqx-PatTel-7731"},
	{0x0010, 0x2180, "SH", "Occupation", "Zqx-Occup-7731"},
	{0x0010, 0x21B0, "LT", "Additional Patient History", "Zqx-PatientHistory-7731"},
	{0x0010, 0x4000, "LT", "Patient Comments", "Zqx-PatientComments-7731"},
	{0x0018, 0x1000, "LO", "Device Serial Number", "Zqx-DeviceSerial-7731"},
	{0x0018, 0x1030, "LO", "Protocol Name", "Zqx-Protocol-7731"},
	{0x0020, 0x0010, "SH", "Study ID", "Zqx-StudyId-7731"},
	{0x0020, 0x4000, "LT", "Image Comments", "Zqx-ImageComments-7731"},
	{0x0032, 0x1032, "PN", "Requesting Physician", "Zqx-Requesting-7731^Zqx-ReqGiven-7731"},
	{0x0040, 0x0253, "SH", "Performed Procedure Step ID", "Zqx-StepId-7731"},
	{0x0040, 0x0254, "LO", "Performed Procedure Step Description", "Zqx-StepDescription-7731"},
}

// identifyingElems is identifying as elements for the synthesizer.
func identifyingElems() []pt.Elem {
	els := make([]pt.Elem, 0, len(identifying))
	for _, a := range identifying {
		els = append(els, pt.Str(pt.Tag(a.Group, a.Element), a.VR, a.Value))
	}
	return els
}

// addIdentifying adds the values of identifying.
func (ids *Identifiers) addIdentifying() {
	for _, a := range identifying {
		if a.VR == "PN" {
			ids.addName(a.String(), a.Value)
		} else {
			ids.add(a.String(), a.Value, substring)
		}
	}
}
