package pipeline

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"strconv"
	"strings"

	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
)

// maxInlineBinary is the largest binary value put inline in the DICOM JSON
// sidecar; larger ones get a BulkDataURI.
const maxInlineBinary = 1024

// jsonAttr is one attribute of a DICOM JSON object (PS3.18 F.2.2).
type jsonAttr struct {
	VR           string `json:"vr"`
	Value        []any  `json:"Value,omitempty"`
	InlineBinary string `json:"InlineBinary,omitempty"`
	BulkDataURI  string `json:"BulkDataURI,omitempty"`
}

// jsonPN is a PN value in DICOM JSON (F.2.2).
type jsonPN struct {
	Alphabetic  string `json:"Alphabetic,omitempty"`
	Ideographic string `json:"Ideographic,omitempty"`
	Phonetic    string `json:"Phonetic,omitempty"`
}

// decoder turns element values into Go values with the dataset's byte
// order and character set, collecting charset findings.
type decoder struct {
	order   binary.ByteOrder
	cs      *charset
	bulkURI func(e *dataElement) string
	// implicit is set for an Implicit VR data set, where the VR of a
	// "US or SS" element is not sent: signed is set where the data set,
	// or the item, has signed pixels (Pixel Representation 1), and its
	// "US or SS" elements are then SS; but for LUT descriptors, which
	// dataset.LUTFirstValueSigned decides by the values their LUT maps
	// (lut: a VOI LUT Sequence's item's, VOILUT; any other's, those of the
	// pixels), lutIn of the data set or item (an icon) of the image.
	implicit bool
	signed   bool
	lut      dataset.LUTKind
	lutIn    dataset.LUTInput
	found    *textFindings // shared by the decoders of a data set's items
}

// textFindings are what decoding a data set's text found, for its
// charset findings: text that did not fit the character set it was
// decoded by (the data set's or an item's own, PS3.5 7.5), and the items'
// own character sets, in the order met.
type textFindings struct {
	unfit    map[unfitText]bool
	itemSets []*charset
}

// unfitText is an element's text that did not fit the character set named.
type unfitText struct {
	tag uint32
	cs  string
}

func newTextFindings() *textFindings {
	return &textFindings{unfit: map[unfitText]bool{}}
}

// text returns the decoded values of a string element (nil for none).
func (d *decoder) text(e *dataElement) []string {
	if e == nil || len(e.Value) == 0 {
		return nil
	}
	raw := e.Value
	var s string
	if textVR(e.VR) {
		var ok bool
		s, ok = d.cs.decode(raw, e.VR)
		if !ok {
			d.found.unfit[unfitText{e.Tag, d.cs.name}] = true
		}
	} else {
		s = string(raw)
	}
	var vals []string
	if singleValued(e.VR) {
		vals = []string{strings.TrimRight(s, " \x00")}
	} else {
		vals = strings.Split(s, `\`)
		for i, v := range vals {
			if e.VR == "UI" {
				vals[i] = strings.TrimRight(v, "\x00 ")
			} else {
				vals[i] = strings.Trim(v, " \x00")
			}
		}
	}
	return vals
}

// singleValued reports whether a string VR has one value, in which 0x5C
// is a character, not a delimiter (PS3.5 6.2).
func singleValued(vr string) bool {
	switch vr {
	case "LT", "ST", "UT", "UR":
		return true
	}
	return false
}

// first returns the first value of a string element in ds ("" if none).
func (d *decoder) first(ds *dataSet, t uint32) string {
	v := d.text(ds.find(t))
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// tagKey is a tag as DICOM JSON names it (F.2.2): eight uppercase hex
// digits, group then element. It runs for every element of every
// header, where fmt.Sprintf("%08X") allocated and parsed its format.
func tagKey(t uint32) string {
	const digits = "0123456789ABCDEF"
	var b [8]byte
	for i := 7; i >= 0; i-- {
		b[i] = digits[t&0xF]
		t >>= 4
	}
	return string(b[:])
}

// toJSON converts a dataset to a DICOM JSON object.
func (d *decoder) toJSON(ds *dataSet) map[string]jsonAttr {
	out := make(map[string]jsonAttr, len(ds.Elements))
	for _, e := range ds.Elements {
		if e.Tag>>16 == 0x0002 || e.Tag&0xFFFF == 0 {
			continue // file meta and group lengths are not part of DICOM JSON
		}
		out[tagKey(e.Tag)] = d.attr(e)
	}
	return out
}

// item is the decoder of an item of the sequence seq: the item's own
// Specific Character Set applies to it and the items nested in it, the
// enclosing data set's when it has none (PS3.5 7.5); so does its own Pixel
// Representation (an icon image's, PS3.3 C.7.6.1.4), which decides its
// "US or SS" elements in Implicit VR, and a VOI LUT Sequence's item's LUT
// Descriptor maps the image's Modality LUT output (dataset.VOILUT).
func (d *decoder) item(seq uint32, it *dataSet) *decoder {
	e := it.find(tagSpecificCharSet)
	signed, ok := d.signedPixels(it)
	lut := dataset.StoredValueLUT
	if seq == tagVOILUTSequence {
		lut = dataset.VOILUT
	}
	in := d.lutIn
	if ok {
		in = d.lutInput(it)
	} else if d.implicit {
		in = d.frameTransform(it, in)
	}
	if e == nil && (!ok || signed == d.signed) && lut == d.lut && in == d.lutIn {
		return d
	}
	c := *d
	c.lut, c.lutIn = lut, in
	if e != nil {
		c.cs = newCharset(string(e.Value))
		d.found.itemSets = append(d.found.itemSets, c.cs)
	}
	if ok {
		c.signed = signed
	}
	return &c
}

// signedPixels reports whether ds, in Implicit VR, has a Pixel
// Representation (0028,0103) of its own (ok) and whether it is 1, signed
// pixels: wherever it is in ds, also after the elements it decides.
func (d *decoder) signedPixels(ds *dataSet) (signed, ok bool) {
	pr := ds.find(tagPixelRepr)
	if !d.implicit || pr == nil || len(pr.Value) != 2 {
		return false, false
	}
	return d.order.Uint16(pr.Value) == 1, true
}

// lutInput is what decides the sign of the values the LUTs of the image
// ds map (dataset.LUTInput), read only in Implicit VR, where it decides
// their descriptors' VR: its Pixel Representation, Bits Allocated and
// Stored, Modality LUT Sequence and rescale, or those of its Shared
// Functional Groups' Pixel Value Transformation (an enhanced multi-frame
// object's, frameTransform).
func (d *decoder) lutInput(ds *dataSet) dataset.LUTInput {
	if !d.implicit {
		return dataset.LUTInput{}
	}
	var in dataset.LUTInput
	in.SignedPixels, _ = d.signedPixels(ds)
	if e := ds.find(tagBitsAllocated); e != nil && len(e.Value) == 2 {
		in.BitsAllocated = int(d.order.Uint16(e.Value))
	}
	if e := ds.find(tagBitsStored); e != nil && len(e.Value) == 2 {
		in.BitsStored = int(d.order.Uint16(e.Value))
	}
	d.modalityTransform(ds, &in)
	if fg := firstItem(ds, tagSharedFunctionalGroups); fg != nil {
		in = d.frameTransform(fg, in)
	}
	return in
}

// frameTransform is in with the Modality LUT transformation of the
// functional groups item fg where it has one: its Pixel Value
// Transformation Sequence's (0028,9145; PS3.3 C.7.6.16.2.9), the rescale
// (or Modality LUT) of an enhanced multi-frame object's frames, in place
// of the image's. A Per-frame Functional Groups item's stands for the
// Shared one's (C.7.6.16: a macro is in one or the other), and decides the
// VOI LUT of its Frame VOI LUT Sequence, which precedes it.
func (d *decoder) frameTransform(fg *dataSet, in dataset.LUTInput) dataset.LUTInput {
	if pvt := firstItem(fg, tagPixelValueTransformation); pvt != nil {
		in.ModalityLUT, in.Slope, in.Intercept = false, 0, 0
		d.modalityTransform(pvt, &in)
	}
	return in
}

// modalityTransform reads into in the Modality LUT Sequence and rescale
// of ds.
func (d *decoder) modalityTransform(ds *dataSet, in *dataset.LUTInput) {
	if firstItem(ds, tagModalityLUTSequence) != nil {
		in.ModalityLUT = true
	}
	if v, err := strconv.ParseFloat(d.first(ds, tagRescaleSlope), 64); err == nil {
		in.Slope = v
	}
	if v, err := strconv.ParseFloat(d.first(ds, tagRescaleIntercept), 64); err == nil {
		in.Intercept = v
	}
}

// firstItem is the first item of the sequence t of ds, nil without one.
func firstItem(ds *dataSet, t uint32) *dataSet {
	if e := ds.find(t); e != nil && len(e.Items) > 0 {
		return e.Items[0]
	}
	return nil
}

func (d *decoder) attr(e *dataElement) jsonAttr {
	a := jsonAttr{VR: e.VR}
	if e.Bulk {
		a.BulkDataURI = d.bulkURI(e)
		return a
	}
	switch e.VR {
	case "SQ":
		for _, it := range e.Items {
			a.Value = append(a.Value, d.item(e.Tag, it).toJSON(it))
		}
	case "PN":
		vals := d.text(e)
		names := make([]any, len(vals))
		some := false
		for i, v := range vals {
			if pn, ok := personNameJSON(v); ok {
				names[i], some = pn, true
			}
		}
		if some || len(vals) > 1 {
			a.Value = names
		}
	case "IS", "DS":
		for _, v := range valued(d.text(e)) {
			a.Value = append(a.Value, number(v, e.VR == "IS"))
		}
	case "US", "SS", "UL", "SL", "UV", "SV", "FL", "FD":
		lut := dataset.LUTDescriptor(e.Tag) && (e.VR == "US" || e.VR == "SS")
		switch {
		case lut:
			// Its VR is its first value mapped's, by the one rule for LUT
			// descriptors (as sent in Explicit VR).
			explicit := e.VR
			if d.implicit {
				explicit = ""
			}
			a.VR = "US"
			if dataset.LUTFirstValueSigned(dataset.ForEncoding, d.lut, d.lutIn, explicit) {
				a.VR = "SS"
			}
		case e.VR == "US" && d.signed && dataset.SignedAlternative(e.Tag):
			a.VR = "SS"
		}
		a.Value = d.binaryNumbers(e, a.VR)
		if a.VR == "SS" && lut {
			// Its count and bits per entry are unsigned whatever the VR.
			for i, v := range a.Value {
				if dataset.LUTDescriptorUnsigned(i) {
					a.Value[i] = uint16(v.(int16))
				}
			}
		}
	case "AT":
		for i := 0; i+4 <= len(e.Value); i += 4 {
			a.Value = append(a.Value, tagKey(uint32(d.order.Uint16(e.Value[i:]))<<16|uint32(d.order.Uint16(e.Value[i+2:]))))
		}
	case "OB", "OD", "OF", "OL", "OV", "OW", "UN":
		if len(e.Value) > maxInlineBinary {
			a.BulkDataURI = d.bulkURI(e)
		} else if len(e.Value) > 0 {
			a.InlineBinary = base64.StdEncoding.EncodeToString(e.Value)
		}
	default:
		for _, v := range valued(d.text(e)) {
			if v == "" {
				a.Value = append(a.Value, nil)
			} else {
				a.Value = append(a.Value, v)
			}
		}
	}
	return a
}

// valued returns the values of an element, none when its one value is
// empty: a value of padding alone is no value (PS3.18 F.2.5 keeps null for
// the empty values among several).
func valued(vals []string) []string {
	if len(vals) == 1 && vals[0] == "" {
		return nil
	}
	return vals
}

// personNameJSON is a PN value in DICOM JSON (PS3.18 F.2.2): its component
// groups that have a non-empty component (personNameGroups); ok is false
// when no group has one (an empty value, or "^^^^").
func personNameJSON(v string) (jsonPN, bool) {
	g := personNameGroups(v)
	return jsonPN{Alphabetic: g[0], Ideographic: g[1], Phonetic: g[2]}, g != [3]string{}
}

// personNameGroups are the alphabetic, ideographic and phonetic component
// groups of a decoded PN value, each without trailing component delimiters
// and padding (PS3.5 6.2.1.1 lets them be omitted), "" for one without a
// non-empty component: the one rule of the DICOM JSON document's names
// and the study index's (IndexedPersonName), whatever the character set.
func personNameGroups(v string) [3]string {
	var g [3]string
	for i, s := range strings.SplitN(v, "=", 3) {
		if s = strings.TrimRight(s, "^ "); strings.Trim(s, "^ ") != "" {
			g[i] = s
		}
	}
	return g
}

// IndexedPersonName is a decoded PN value as the study index keeps it
// (InstanceRecord.PatientName, StudySummary.PatientName): its component
// groups (personNameGroups) joined by "=", trailing empty groups dropped,
// so "Doe^John^^^" is "Doe^John", "Yamada^Tarou=山田^太郎=" is
// "Yamada^Tarou=山田^太郎", "=山田^太郎" stays, and a name of delimiters
// alone ("^^^^", "=^^^^=") is "", no name.
func IndexedPersonName(v string) string {
	g := personNameGroups(v)
	n := len(g)
	for n > 0 && g[n-1] == "" {
		n--
	}
	return strings.Join(g[:n], "=")
}

// number renders an IS/DS value as a JSON number; unparseable text is kept
// as a string so nothing is lost.
func number(v string, integer bool) any {
	if v == "" {
		return nil
	}
	if integer {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n
		}
	} else if f, err := strconv.ParseFloat(v, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
		if jsonNumber(v) {
			// As written: a float64 may not hold its 16 digits.
			return json.Number(v)
		}
		return json.Number(strconv.FormatFloat(f, 'g', -1, 64))
	}
	return v
}

// jsonNumber reports whether v is a number as JSON writes one (RFC 8259
// section 6): -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?. A DS may be
// written otherwise ("+1.5", ".5", "1.", "007").
func jsonNumber(v string) bool {
	i := 0
	digits := func() int {
		n := 0
		for i < len(v) && v[i] >= '0' && v[i] <= '9' {
			i, n = i+1, n+1
		}
		return n
	}
	if i < len(v) && v[i] == '-' {
		i++
	}
	start := i
	if n := digits(); n == 0 || (n > 1 && v[start] == '0') {
		return false
	}
	if i < len(v) && v[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(v) && (v[i] == 'e' || v[i] == 'E') {
		i++
		if i < len(v) && (v[i] == '+' || v[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(v)
}

// binaryNumbers are the values of e read as vr.
func (d *decoder) binaryNumbers(e *dataElement, vr string) []any {
	b := e.Value
	var out []any
	size := map[string]int{"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "UV": 8, "SV": 8, "FD": 8}[vr]
	for i := 0; i+size <= len(b); i += size {
		switch vr {
		case "US":
			out = append(out, d.order.Uint16(b[i:]))
		case "SS":
			out = append(out, int16(d.order.Uint16(b[i:])))
		case "UL":
			out = append(out, d.order.Uint32(b[i:]))
		case "SL":
			out = append(out, int32(d.order.Uint32(b[i:])))
		case "UV":
			out = append(out, d.order.Uint64(b[i:]))
		case "SV":
			out = append(out, int64(d.order.Uint64(b[i:])))
		case "FL":
			f := float64(math.Float32frombits(d.order.Uint32(b[i:])))
			out = append(out, finite(f))
		case "FD":
			out = append(out, finite(math.Float64frombits(d.order.Uint64(b[i:]))))
		}
	}
	return out
}

// finite keeps NaN and infinities (which JSON cannot hold) as strings.
func finite(f float64) any {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return f
}

// PersonName is one component group of a person name, split into its
// components (PS3.5 6.2.1.1).
type PersonName struct {
	Family string `json:"family,omitempty"`
	Given  string `json:"given,omitempty"`
	Middle string `json:"middle,omitempty"`
	Prefix string `json:"prefix,omitempty"`
	Suffix string `json:"suffix,omitempty"`
}

// PersonNameGroups are the alphabetic, ideographic and phonetic groups.
type PersonNameGroups struct {
	Alphabetic  *PersonName `json:"alphabetic,omitempty"`
	Ideographic *PersonName `json:"ideographic,omitempty"`
	Phonetic    *PersonName `json:"phonetic,omitempty"`
}

// ParsePersonName splits a decoded PN value.
func ParsePersonName(v string) PersonNameGroups {
	var out PersonNameGroups
	groups := strings.SplitN(v, "=", 3)
	dst := []**PersonName{&out.Alphabetic, &out.Ideographic, &out.Phonetic}
	for i, g := range groups {
		if strings.Trim(g, "^ ") == "" {
			continue
		}
		c := strings.SplitN(g, "^", 5)
		for len(c) < 5 {
			c = append(c, "")
		}
		for j := range c {
			c[j] = strings.TrimSpace(c[j])
		}
		*dst[i] = &PersonName{Family: c[0], Given: c[1], Middle: c[2], Prefix: c[3], Suffix: c[4]}
	}
	return out
}

// ISODate converts a DA value (YYYYMMDD, or the retired YYYY.MM.DD) to
// YYYY-MM-DD; ok is false when v is not a date.
func ISODate(v string) (string, bool) {
	v = strings.ReplaceAll(strings.TrimSpace(v), ".", "")
	if len(v) != 8 || !digits(v) {
		return "", false
	}
	m, _ := strconv.Atoi(v[4:6])
	day, _ := strconv.Atoi(v[6:8])
	if m < 1 || m > 12 || day < 1 || day > 31 {
		return "", false
	}
	return v[0:4] + "-" + v[4:6] + "-" + v[6:8], true
}

// ISOTime converts a TM value (HH[MM[SS[.F{1,6}]]], or the retired
// HH:MM:SS) to HH[:MM[:SS[.F]]].
func ISOTime(v string) (string, bool) {
	v = strings.ReplaceAll(strings.TrimSpace(v), ":", "")
	frac := ""
	if i := strings.IndexByte(v, '.'); i >= 0 {
		v, frac = v[:i], v[i+1:]
		if len(v) != 6 || frac == "" || len(frac) > 6 || !digits(frac) {
			return "", false
		}
	}
	if len(v) < 2 || len(v) > 6 || len(v)%2 != 0 || !digits(v) {
		return "", false
	}
	limits := []int{23, 59, 60}
	parts := []string{}
	for i := 0; i < len(v); i += 2 {
		n, _ := strconv.Atoi(v[i : i+2])
		if n > limits[i/2] {
			return "", false
		}
		parts = append(parts, v[i:i+2])
	}
	s := strings.Join(parts, ":")
	if frac != "" {
		s += "." + frac
	}
	return s, true
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
