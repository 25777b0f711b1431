package pipeline

import (
	"bytes"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/korean"
	"golang.org/x/text/encoding/simplifiedchinese"
)

// charset decodes the text of a dataset from its declared Specific
// Character Set (0008,0005) to UTF-8 (PS3.5 6.1, PS3.3 C.12.1.1.2).
type charset struct {
	name  string // the value of Specific Character Set, without padding
	terms []string
	// single is the decoder when no code extensions are used; nil for the
	// default repertoire, UTF-8 or JIS X 0201.
	single  encoding.Encoding
	utf8    bool
	iso2022 bool
	// jisX0201 is set for ISO_IR 13: JIS X 0201, its Roman in G0 and its
	// katakana in G1, and nothing else (PS3.3 Table C.12-2).
	jisX0201 bool
	// g0 and g1 are the initial G0 and G1 sets under ISO 2022 (from
	// value 1).
	g0      g0set
	g1      g1set
	unknown []string // terms we cannot decode
}

type g0set int

const (
	g0ASCII   g0set = iota
	g0Roman         // JIS X 0201 Roman (ISO-IR 14): ESC ( J
	g0JIS0208       // ESC $ B, ESC $ @
	g0JIS0212       // ESC $ ( D
)

type g1set int

const (
	g1None g1set = iota
	g1Latin
	g1Katakana
	g1KSX1001
	g1GB2312
)

// singleByte maps single-byte defined terms (without code extensions) to
// their encodings; the ISO 2022 variants use the same table for G1.
var singleByte = map[string]encoding.Encoding{
	"ISO_IR 100": charmap.ISO8859_1,
	"ISO_IR 101": charmap.ISO8859_2,
	"ISO_IR 109": charmap.ISO8859_3,
	"ISO_IR 110": charmap.ISO8859_4,
	"ISO_IR 144": charmap.ISO8859_5,
	"ISO_IR 127": charmap.ISO8859_6,
	"ISO_IR 126": charmap.ISO8859_7,
	"ISO_IR 138": charmap.ISO8859_8,
	"ISO_IR 148": charmap.ISO8859_9,
	"ISO_IR 203": charmap.ISO8859_15,
	"ISO_IR 166": charmap.Windows874, // TIS 620-2533 superset
	// ISO_IR 13 (JIS X 0201) is none of these: its G0 is not ASCII, and
	// no encoding of golang.org/x/text is JIS X 0201 alone (Shift_JIS
	// holds kanji too). The charset decodes it (jisX0201Rune).
}

// newCharset interprets the values of Specific Character Set.
func newCharset(raw string) *charset {
	cs := &charset{name: strings.TrimSpace(raw)}
	for _, t := range strings.Split(raw, `\`) {
		cs.terms = append(cs.terms, strings.TrimSpace(t))
	}
	if len(cs.terms) == 1 && cs.terms[0] == "" {
		cs.terms = nil
	}
	switch {
	case len(cs.terms) == 0:
		return cs
	case len(cs.terms) == 1 && !strings.HasPrefix(cs.terms[0], "ISO 2022"):
		switch t := cs.terms[0]; t {
		case "ISO_IR 6":
		case "ISO_IR 192":
			cs.utf8 = true
		case "ISO_IR 13":
			cs.jisX0201 = true
		case "GB18030":
			cs.single = simplifiedchinese.GB18030
		case "GBK":
			cs.single = simplifiedchinese.GBK
		default:
			if e, ok := singleByte[t]; ok {
				cs.single = e
			} else {
				cs.unknown = append(cs.unknown, t)
			}
		}
		return cs
	}
	cs.iso2022 = true
	for i, t := range cs.terms {
		if i == 0 && t == "" {
			continue
		}
		switch t {
		case "ISO 2022 IR 6", "ISO 2022 IR 87", "ISO 2022 IR 159", "ISO 2022 IR 149", "ISO 2022 IR 58", "ISO 2022 IR 13":
		default:
			if _, ok := singleByte["ISO_IR "+strings.TrimPrefix(t, "ISO 2022 IR ")]; !ok || !strings.HasPrefix(t, "ISO 2022 IR ") {
				cs.unknown = append(cs.unknown, t)
			}
		}
	}
	switch first := cs.terms[0]; first {
	case "ISO 2022 IR 13":
		// Both halves of JIS X 0201 (PS3.3 Table C.12-3).
		cs.g0, cs.g1 = g0Roman, g1Katakana
	case "ISO 2022 IR 149":
		cs.g1 = g1KSX1001
	case "ISO 2022 IR 58":
		cs.g1 = g1GB2312
	default:
		if e, ok := singleByte["ISO_IR "+strings.TrimPrefix(first, "ISO 2022 IR ")]; ok && first != "ISO 2022 IR 6" {
			cs.single = e
			cs.g1 = g1Latin
		}
	}
	return cs
}

// romanRune is the character of c (below 0x80) in JIS X 0201 Roman
// (ISO-IR 14, PS3.5 H.1.1): ASCII's but for 0x5C, YEN SIGN, and 0x7E,
// OVERLINE. In a delimited value (SH, LO, PN, UC) 0x5C stays the
// backslash that separates the values, whatever character it shows
// (PS3.18 F.2.4, PS3.5 H.1.1 note 3).
func romanRune(c byte, delimited bool) rune {
	switch {
	case c == 0x5C && !delimited:
		return '\u00A5'
	case c == 0x7E:
		return '\u203E'
	}
	return rune(c)
}

// katakanaRune is the character of c in JIS X 0201 katakana (ISO-IR 13)
// as G1: 0xA1-0xDF, the halfwidth forms U+FF61-U+FF9F. ok is false for
// any other byte, which the set does not have.
func katakanaRune(c byte) (r rune, ok bool) {
	if c >= 0xA1 && c <= 0xDF {
		return rune(0xFF61 + int(c) - 0xA1), true
	}
	return utf8.RuneError, false
}

// jisX0201Rune is the character of c in ISO_IR 13: JIS X 0201 Roman
// below 0x80, its katakana above. ok is false for a byte of neither (a
// Shift_JIS kanji's lead byte, say), which becomes U+FFFD as any byte
// that does not fit its set does.
func jisX0201Rune(c byte, delimited bool) (r rune, ok bool) {
	if c < 0x80 {
		return romanRune(c, delimited), true
	}
	return katakanaRune(c)
}

// decodeJISX0201 decodes a value of ISO_IR 13 (jisX0201Rune). A byte of
// neither half of JIS X 0201 that starts a Shift_JIS two-byte character
// with the byte after it is read as that character, and ok is false: the
// text does not fit the declared set (charset-mismatch), but a sender that
// labels Shift_JIS ISO_IR 13, common in Japan, has its kanji kept readable
// and whole, as DCMTK (with ICU or glibc's iconv), Orthanc and pydicom read
// them: a second byte of 0x5C (能, 表, ソ) is no delimiter, and two names
// that differ in a kanji do not become one string of U+FFFD.
func decodeJISX0201(b []byte, delimited bool) (string, bool) {
	ok := true
	var out strings.Builder
	for i := 0; i < len(b); {
		c := b[i]
		if r, good := jisX0201Rune(c, delimited); good {
			out.WriteRune(r)
			i++
			continue
		}
		ok = false
		if i+1 < len(b) && shiftJISLead(c) && shiftJISTrail(b[i+1]) {
			if s, good := decodeWith(japanese.ShiftJIS, b[i:i+2]); good {
				out.WriteString(s)
				i += 2
				continue
			}
		}
		out.WriteRune(utf8.RuneError)
		i++
	}
	return out.String(), ok
}

// shiftJISLead and shiftJISTrail say whether c can be the first, or the
// second, byte of a Shift_JIS two-byte character.
func shiftJISLead(c byte) bool  { return c >= 0x81 && c <= 0x9F || c >= 0xE0 && c <= 0xFC }
func shiftJISTrail(c byte) bool { return c >= 0x40 && c <= 0xFC && c != 0x7F }

// decode converts a text value of vr (SH, LO, ST, LT, UT, UC or PN) to
// UTF-8. ok is false when bytes did not fit the declared character set
// (they become U+FFFD).
func (cs *charset) decode(b []byte, vr string) (s string, ok bool) {
	delimited := !singleValued(vr) // 0x5C separates its values
	switch {
	case cs.jisX0201:
		return decodeJISX0201(b, delimited)
	case cs.utf8:
		if utf8.Valid(b) {
			return string(b), true
		}
		return strings.ToValidUTF8(string(b), "\uFFFD"), false
	case cs.iso2022:
		return cs.decode2022(b, vr)
	case cs.single != nil:
		return decodeWith(cs.single, b)
	default:
		// Default repertoire: ASCII only.
		for _, c := range b {
			if c >= 0x80 {
				return strings.ToValidUTF8(asciiOnly(b), "\uFFFD"), false
			}
		}
		return string(b), true
	}
}

func asciiOnly(b []byte) string {
	out := make([]rune, 0, len(b))
	for _, c := range b {
		if c >= 0x80 {
			out = append(out, utf8.RuneError)
		} else {
			out = append(out, rune(c))
		}
	}
	return string(out)
}

// replacement is U+FFFD in UTF-8.
var replacement = []byte(string(utf8.RuneError))

// decodeWith decodes b, text in e, to UTF-8; ok is false when b has bytes
// e has no character for (they become U+FFFD).
func decodeWith(e encoding.Encoding, b []byte) (string, bool) {
	out, err := e.NewDecoder().Bytes(b)
	if err != nil {
		return asciiOnly(b), false
	}
	if bytes.Contains(out, replacement) {
		// A U+FFFD out is bytes the set has no character for, unless
		// the set has a code for U+FFFD itself (GB18030's 84 31 A4 37)
		// and the sender wrote it: then the text encodes back to b.
		// Looking for U+FFFD's UTF-8 bytes in b is not that: b is in the
		// set, where EF BF BD are other characters (ï¿½ in Latin-1).
		back, err := e.NewEncoder().Bytes(out)
		return string(out), err == nil && bytes.Equal(back, b)
	}
	return string(out), true
}

// decode2022 handles ISO 2022 code extensions (PS3.5 6.1.2.5): escape
// sequences switch G0 between ASCII, JIS X 0201 Roman, JIS X 0208 and JIS
// X 0212 and G1 between the single-byte sets, JIS X 0201 katakana, KS X
// 1001 and GB 2312. The initial state, the sets of value 1, is
// re-established at each value's delimiters (isoResets): control
// characters (CR, LF, FF, TAB), the value separator 0x5C and, in a PN, the
// component and group delimiters ^ and = (PS3.5 6.1.2.5.3). A sender is
// to switch back before them; one that did not is read as the standard
// has the receiver read it: what follows the delimiter is in the initial
// sets. While G0 holds a two-byte set (JIS X 0208, 0212), a delimiter's
// byte that starts a two-byte code (the byte after it in 0x21-0x7E) is
// that character's, as 0x5C is in 芹 (PS3.5 6.1.2.3: only a single byte
// 0x5C separates values); one that does not is the delimiter.
func (cs *charset) decode2022(b []byte, vr string) (string, bool) {
	ok := true
	delimited := !singleValued(vr)
	resets := isoResets(vr)
	g0, g1, latin := cs.g0, cs.g1, cs.single
	var out strings.Builder
	put := func(s string, good bool) {
		out.WriteString(s)
		ok = ok && good
	}
	for i := 0; i < len(b); {
		c := b[i]
		if c == 0x1B { // ESC
			seq := b[i+1:]
			n := 0
			switch {
			case bytes.HasPrefix(seq, []byte("(B")):
				g0, n = g0ASCII, 2
			case bytes.HasPrefix(seq, []byte("(J")):
				g0, n = g0Roman, 2
			case bytes.HasPrefix(seq, []byte("$B")), bytes.HasPrefix(seq, []byte("$@")):
				g0, n = g0JIS0208, 2
			case bytes.HasPrefix(seq, []byte("$(D")):
				g0, n = g0JIS0212, 3
			case bytes.HasPrefix(seq, []byte(")I")):
				g1, n = g1Katakana, 2
			case bytes.HasPrefix(seq, []byte("$)C")):
				g1, n = g1KSX1001, 3
			case bytes.HasPrefix(seq, []byte("$)A")):
				g1, n = g1GB2312, 3
			case len(seq) >= 2 && seq[0] == '-':
				if e, found := latinG1[seq[1]]; found {
					g1, latin, n = g1Latin, e, 2
				}
			}
			if n == 0 {
				put("\uFFFD", false)
				i++
				continue
			}
			i += 1 + n
			continue
		}
		twoByte := g0 == g0JIS0208 || g0 == g0JIS0212
		pair := twoByte && i+1 < len(b) && b[i+1] >= 0x21 && b[i+1] <= 0x7E
		if c < 0x20 || !pair && strings.IndexByte(resets, c) >= 0 {
			// A control character or a delimiter: the initial sets again.
			g0, g1, latin = cs.g0, cs.g1, cs.single
			out.WriteByte(c)
			i++
			continue
		}
		if c == 0x20 {
			// SPACE whatever G0 holds: no 94-character set has 0x20.
			out.WriteByte(c)
			i++
			continue
		}
		if c < 0x80 {
			switch {
			case g0 == g0ASCII:
				out.WriteByte(c)
				i++
				continue
			case g0 == g0Roman:
				out.WriteRune(romanRune(c, delimited))
				i++
				continue
			case !pair:
				// Half of a two-byte character.
				out.WriteByte(c)
				ok = false
				i++
				continue
			}
			if g0 == g0JIS0208 {
				put(decodeWith(japanese.EUCJP, []byte{c | 0x80, b[i+1] | 0x80}))
			} else {
				put(decodeWith(japanese.EUCJP, []byte{0x8F, c | 0x80, b[i+1] | 0x80}))
			}
			i += 2
			continue
		}
		switch g1 {
		case g1Latin:
			put(decodeWith(latin, []byte{c}))
			i++
		case g1Katakana:
			r, good := katakanaRune(c)
			put(string(r), good)
			i++
		case g1KSX1001, g1GB2312:
			if !in94x94(c) || i+1 >= len(b) || !in94x94(b[i+1]) {
				// Not a character or half one: both bytes of a 94x94
				// set in G1 are in 0xA1-0xFE (a first byte below is
				// UHC's or GBK's, the decoders', not the set's), and
				// the byte after is not swallowed (a control
				// character, a delimiter).
				put("\uFFFD", false)
				i++
				continue
			}
			e := encoding.Encoding(korean.EUCKR)
			if g1 == g1GB2312 {
				e = simplifiedchinese.GBK
			}
			put(decodeWith(e, b[i:i+2]))
			i += 2
		default:
			put("\uFFFD", false)
			i++
		}
	}
	return out.String(), ok
}

// latinG1 maps the final byte of "ESC - F" (96-character G1 sets) to the
// ISO 8859 part it designates.
var latinG1 = map[byte]encoding.Encoding{
	'A': charmap.ISO8859_1, 'B': charmap.ISO8859_2, 'C': charmap.ISO8859_3, 'D': charmap.ISO8859_4,
	'L': charmap.ISO8859_5, 'G': charmap.ISO8859_6, 'F': charmap.ISO8859_7, 'H': charmap.ISO8859_8,
	'M': charmap.ISO8859_9, 'T': charmap.Windows874, 'b': charmap.ISO8859_15,
}

// in94x94 reports whether c can be a byte of a character of a 94x94 set
// (KS X 1001, GB 2312) in G1: 0xA1-0xFE.
func in94x94(c byte) bool { return c >= 0xA1 && c <= 0xFE }

// isoResets are the bytes besides the control characters at which ISO
// 2022 returns to the initial sets in a value of vr (PS3.5 6.1.2.5.3): the
// value separator, and in a PN its component and group delimiters.
func isoResets(vr string) string {
	switch {
	case vr == "PN":
		return `\^=`
	case singleValued(vr):
		return ""
	}
	return `\`
}

// textVR reports whether a VR's value is decoded with the Specific
// Character Set (the others use the default repertoire).
func textVR(vr string) bool {
	switch vr {
	case "SH", "LO", "ST", "LT", "UT", "UC", "PN":
		return true
	}
	return false
}

// described is how a finding names the character set: its value, quoted,
// when every term has the form of a defined term (a value of another
// element written here by a faulty sender is not repeated).
func (cs *charset) described() string {
	for _, t := range cs.terms {
		if t != "" && t != "GB18030" && t != "GBK" && !charsetTermForm(t) {
			return "(not in the form of defined terms)"
		}
	}
	return strconv.Quote(cs.name)
}

// charsetTermForm reports whether t has the form of a defined term of
// Specific Character Set (PS3.3 C.12.1.1.2): "ISO_IR" or "ISO 2022 IR", a
// space and a registration number. The others, GB18030 and GBK, are known.
func charsetTermForm(t string) bool {
	n, ok := strings.CutPrefix(t, "ISO_IR ")
	if !ok {
		n, ok = strings.CutPrefix(t, "ISO 2022 IR ")
	}
	return ok && len(n) >= 1 && len(n) <= 3 && strings.Trim(n, "0123456789") == ""
}
