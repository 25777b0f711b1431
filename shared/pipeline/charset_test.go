package pipeline

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCharsetDecode(t *testing.T) {
	tests := []struct {
		name, cs string
		in       string
		want     string
		ok       bool
		vr       string // LO: 0x5C separates values (SH, LO, UC too); PN: also ^ and =; LT: neither (ST, UT too)
	}{
		{"default ascii", "", "Doe^John", "Doe^John", true, "LT"},
		{"default with high bytes", "", "M\xfcller", "M\uFFFDller", false, "LT"},
		{"latin-1", "ISO_IR 100", "Buc^J\xe9r\xf4me", "Buc^Jérôme", true, "LT"},
		{"utf-8", "ISO_IR 192", "Wang^XiaoDong=王^小東=", "Wang^XiaoDong=王^小東=", true, "LT"},
		{"utf-8 declared, latin-1 bytes", "ISO_IR 192", "M\xfcller", "M\uFFFDller", false, "LT"},
		{"cyrillic", "ISO_IR 144", "\xbb\xee\xdace\xdc\xd1\xe3\xe0\xd3", "Люкceмбург", true, "LT"},
		// A byte the set has no character for is U+FFFD and a mismatch
		// (0xA1 is not in ISO 8859-6, 0xFF not in TIS 620).
		{"arabic undefined byte", "ISO_IR 127", "a\xa1", "a\uFFFD", false, "LT"},
		{"thai undefined byte", "ISO_IR 166", "\xa1\xff", "ก\uFFFD", false, "LT"},
		{"gb18030 lead byte alone", "GB18030", "\xcd", "\uFFFD", false, "LT"},
		// The value's bytes are not UTF-8: EF BF BD among them is three
		// characters of ISO 8859-3 (ï ż ½), no U+FFFD that excuses the
		// one of 0xA5, which the set does not have. GB18030 has a code
		// for U+FFFD (84 31 A4 37): that one is the sender's character.
		{"latin-3 undefined byte beside EF BF BD", "ISO_IR 109", "\xef\xbf\xbd\xa5", "ïż½\uFFFD", false, "LT"},
		{"gb18030 code of U+FFFD", "GB18030", "a\x84\x31\xa4\x37", "a\uFFFD", true, "LT"},
		{"gb18030 code of U+FFFD beside a lead byte alone", "GB18030", "\x84\x31\xa4\x37\xcd", "\uFFFD\uFFFD", false, "LT"},
		{"gb18030", "GB18030", "Wang^XiaoDong=\xcd\xf5^\xd0\xa1\xb6\xab=", "Wang^XiaoDong=王^小东=", true, "LT"},
		// PS3.5 H.3.1: Japanese with ISO 2022 IR 87.
		{"iso 2022 ir 87", `\ISO 2022 IR 87`,
			"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B",
			"Yamada^Tarou=山田^太郎=やまだ^たろう", true, "PN"},
		// PS3.5 I.2: Korean with ISO 2022 IR 149.
		{"iso 2022 ir 149", `\ISO 2022 IR 149`,
			"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf",
			"Hong^Gildong=洪^吉洞=홍^길동", true, "PN"},
		{"iso 2022 ir 13 katakana", `ISO 2022 IR 13\ISO 2022 IR 87`, "\xd4\xcf\xc0\xde^\xc0\xdb\xb3", "ﾔﾏﾀﾞ^ﾀﾛｳ", true, "PN"},
		{"iso 2022 unknown escape", `\ISO 2022 IR 87`, "a\x1b%Gb", "a\uFFFD%Gb", false, "LT"},
		// ISO_IR 13 is JIS X 0201 (PS3.3 Table C.12-2): G0 Roman (ISO-IR
		// 14, 0x5C YEN SIGN, 0x7E OVERLINE), G1 katakana at 0xA1-0xDF.
		// Nothing else: Shift_JIS's kanji bytes do not fit it.
		{"iso_ir 13 roman and katakana", "ISO_IR 13", "1\\2~3\xb1\xdf", "1¥2‾3ｱﾟ", true, "LT"},
		{"iso_ir 13 values", "ISO_IR 13", "A\\B~\xb1", "A\\B‾ｱ", true, "LO"},
		// Nor kanji: a sender that labels Shift_JIS ISO_IR 13 (common in
		// Japan) has its two-byte characters read as Shift_JIS, as DCMTK
		// with ICU or glibc's iconv, Orthanc and pydicom read them, with
		// a charset-mismatch (ok false): kept readable and whole, a
		// second byte of 0x5C (能, 表, ソ) no delimiter.
		{"iso_ir 13 shift_jis kanji", "ISO_IR 13", "A\x8e\x52B", "A山B", false, "LT"},
		{"iso_ir 13 shift_jis 0x5c second byte", "ISO_IR 13", "\x94\x5c\x93\x6f^\x91\xbe\x98\x59\\\x95\x5c", "能登^太郎\\表", false, "LO"},
		{"iso_ir 13 shift_jis lead byte alone", "ISO_IR 13", "A\x8e", "A\uFFFD", false, "LT"},
		{"iso_ir 13 shift_jis lead byte before a control", "ISO_IR 13", "\x8e\r\n", "\uFFFD\r\n", false, "LT"},
		{"iso_ir 13 bytes beside katakana", "ISO_IR 13", "\x80\xa0\xa1\xe0\xfd", "\uFFFD\uFFFD｡\uFFFD\uFFFD", false, "LT"},
		// ISO 2022 IR 13 (PS3.3 Table C.12-3): ESC ( J designates JIS X
		// 0201 Roman to G0, ESC ) I its katakana to G1; as value 1 both
		// are the initial designations, restored by control characters.
		{"iso 2022 esc ( j is roman", `\ISO 2022 IR 13`, "\x1b(J1\\2~\x1b(B3\\4~", "1¥2‾3\\4~", true, "LT"},
		// The value separator returns to the initial sets (PS3.5
		// 6.1.2.5.3): ASCII where value 1 is empty.
		{"iso 2022 esc ( j values", `\ISO 2022 IR 13`, "\x1b(JA~\\B~", "A‾\\B~", true, "LO"},
		{"iso 2022 esc ) i is katakana", `\ISO 2022 IR 13`, "a\x1b)I\xb1\xdf", "aｱﾟ", true, "LT"},
		{"iso 2022 katakana only", `\ISO 2022 IR 13`, "\x1b)I\xe0\x40\xa0", "\uFFFD@\uFFFD", false, "LT"},
		{"iso 2022 ir 13 initial roman", `ISO 2022 IR 13\ISO 2022 IR 87`, "1\\2~\xb1\x1b(B3\\4~\r\n5\\6~", "1¥2‾ｱ3\\4~\r\n5¥6‾", true, "LT"},
		{"iso 2022 ir 13 after kanji", `ISO 2022 IR 13\ISO 2022 IR 87`, "\x1b$B;3\x1b(J\\~", "山¥‾", true, "LT"},
		// PS3.5 6.1.2.5.3: the initial state, value 1's sets, is
		// re-established at a control character, at the value separator
		// 0x5C and, in a PN, at ^ and =. The Annex examples switch back
		// before them (H.3.1, H.3.2) and designate G1 again after them
		// (I.2, J.3).
		{"H.3.2 japanese with katakana", `ISO 2022 IR 13\ISO 2022 IR 87`,
			"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J=\x1b$B$d$^$@\x1b(J^\x1b$B$?$m$&\x1b(J",
			"ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう", true, "PN"},
		{"I.2 korean values", `\ISO 2022 IR 149`, "\x1b$)C\xc8\xab\\\x1b$)C\xb1\xe6\xb5\xbf", "홍\\길동", true, "LO"},
		{"J.3 gb2312", `\ISO 2022 IR 58`, "Zhang^XiaoDong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab=", "Zhang^XiaoDong=张^小东=", true, "PN"},
		// G1 is value 1's again after ^, = and 0x5C: KS X 1001 or GB 2312
		// not designated again is no longer there; in a text VR ^ and =
		// are characters and 0x5C too, which change nothing.
		{"korean not designated after ^", `\ISO 2022 IR 149`, "Hong^Gildong=\x1b$)C\xfb\xf3^\xd1\xce\xd4\xd7", "Hong^Gildong=洪^\uFFFD\uFFFD\uFFFD\uFFFD", false, "PN"},
		{"korean ^ in text", `\ISO 2022 IR 149`, "\x1b$)C\xfb\xf3^\xd1\xce\xd4\xd7\\\xc8\xab", "洪^吉洞\\홍", true, "LT"},
		{"korean not designated after 0x5c", `\ISO 2022 IR 149`, "\x1b$)C\xc8\xab\\\xb1\xe6", "홍\\\uFFFD\uFFFD", false, "LO"},
		// Half a KS X 1001 or GB 2312 character before a control
		// character or a delimiter takes neither with it.
		{"korean half before CR", `\ISO 2022 IR 149`, "\x1b$)C\xc8\r\xc8\xab", "\uFFFD\r\uFFFD\uFFFD", false, "LO"},
		{"korean half before ^", `\ISO 2022 IR 149`, "\x1b$)C\xc8^\x1b$)C\xc8\xab", "\uFFFD^홍", false, "PN"},
		// Both bytes of a KS X 1001 or GB 2312 character are in
		// 0xA1-0xFE: a first byte below is none of theirs, though UHC
		// (CP949) and GBK, the decoders' supersets, have a character
		// there.
		{"korean first byte below 0xa1", `\ISO 2022 IR 149`, "\x1b$)C\x81\xa1", "\uFFFD\uFFFD", false, "LO"},
		{"korean first byte 0xa0", `\ISO 2022 IR 149`, "\x1b$)C\xa0\xc8\xab", "\uFFFD홍", false, "LO"},
		{"chinese first byte below 0xa1", `\ISO 2022 IR 58`, "\x1b$)A\x81\xa1", "\uFFFD\uFFFD", false, "LO"},
		{"chinese first byte 0x9f", `\ISO 2022 IR 58`, "\x1b$)A\x9f\xd5\xc5", "\uFFFD张", false, "LO"},
		{"chinese not designated after =", `\ISO 2022 IR 58`, "\x1b$)A\xd5\xc5=\xd5\xc5", "张=\uFFFD\uFFFD", false, "PN"},
		{"greek back to latin-1 after ^", `ISO 2022 IR 100\ISO 2022 IR 126`, "\x1b-F\xc4\xe9\xef^\xc4", "Διο^Ä", true, "PN"},
		{"greek back to latin-1 after =", `ISO 2022 IR 100\ISO 2022 IR 126`, "\x1b-F\xc4\xe9\xef=\xc4", "Διο=Ä", true, "PN"},
		{"greek stays across ^ in text", `ISO 2022 IR 100\ISO 2022 IR 126`, "\x1b-F\xc4\xe9\xef^\xc4", "Διο^Δ", true, "LT"},
		{"roman again after 0x5c", `ISO 2022 IR 13\ISO 2022 IR 87`, "\x1b(BA~\\B~", "A~\\B‾", true, "LO"},
		{"katakana again after =", `ISO 2022 IR 13\ISO 2022 IR 87`, "\x1b$B;3\x1b(B=\xb1", "山=ｱ", true, "PN"},
		// A sender that did not switch back to ASCII before a delimiter:
		// a delimiter's byte that cannot start a two-byte code is the
		// delimiter, and what follows it is in the initial sets.
		{"kanji not switched back before ^ and =", `\ISO 2022 IR 87`,
			"Yamada^Tarou=\x1b$B;3ED^\x1b$BB@O:=\x1b$B$d$^$@^\x1b$B$?$m$&",
			"Yamada^Tarou=山田^太郎=やまだ^たろう", true, "PN"},
		{"kanji not switched back before 0x5c", `\ISO 2022 IR 87`, "\x1b$B;3ED\\\x1b$BB@O:", "山田\\太郎", true, "LO"},
		{"kanji not switched back before 0x5c at the end", `\ISO 2022 IR 87`, "\x1b$B;3ED\\", "山田\\", true, "LO"},
		{"kanji not switched back before CR LF", `\ISO 2022 IR 87`, "\x1b$B;3ED\r\nA~", "山田\r\nA~", true, "LT"},
		{"kanji not switched back before TAB", `\ISO 2022 IR 87`, "\x1b$B;3\tA", "山\tA", true, "LT"},
		{"kanji not switched back before the padding", `\ISO 2022 IR 87`, "\x1b$B;3ED ", "山田 ", true, "PN"},
		// A delimiter's byte that starts a two-byte code is the
		// character's (PS3.5 6.1.2.3): 芹 is 0x3F5C, =Y (0x3D59) is 駿.
		{"0x5c in a kanji", `\ISO 2022 IR 87`, "\x1b$B6\\\x1b(B\\x", "芹\\x", true, "LO"},
		{"= starting a kanji", `\ISO 2022 IR 87`, "\x1b$B;3=Y\x1b(B", "山駿", true, "PN"},
		{"half a kanji before =", `\ISO 2022 IR 87`, "\x1b$B;\x1b(B", ";", false, "PN"},
		// Value 1 alone, which dcm2json (DCMTK 3.6.7) refuses: ISO 2022
		// IR 13 is both halves of JIS X 0201 from the start; ISO 2022 IR
		// 87, a G0 set no delimiter could be told in, starts in ASCII.
		{"iso 2022 ir 13 alone", `ISO 2022 IR 13`, "\xd4\xcf\xc0\xde^\xc0\xdb\xb3=A~", "ﾔﾏﾀﾞ^ﾀﾛｳ=A‾", true, "PN"},
		{"iso 2022 ir 87 alone", `ISO 2022 IR 87`, "Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:", "Yamada^Tarou=山田^太郎", true, "PN"},
		// ISO 2022 IR 149 or 58 as value 1 is KS X 1001 or GB 2312 in G1
		// from the start and again after each delimiter, with no escape.
		{"iso 2022 ir 149 alone", `ISO 2022 IR 149`, "Hong^Gildong=\xfb\xf3^\xd1\xce\xd4\xd7=\xc8\xab", "Hong^Gildong=洪^吉洞=홍", true, "PN"},
		{"iso 2022 ir 149 as value 1 after a delimiter", `ISO 2022 IR 149\ISO 2022 IR 100`, "\x1b-A\xc4\\\xc8\xab", "Ä\\홍", true, "LO"},
		{"iso 2022 ir 58 alone", `ISO 2022 IR 58`, "Zhang^XiaoDong=\xd5\xc5^\xd0\xa1\xb6\xab", "Zhang^XiaoDong=张^小东", true, "PN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := newCharset(tt.cs)
			if len(cs.unknown) > 0 {
				t.Fatalf("unknown terms %v", cs.unknown)
			}
			got, ok := cs.decode([]byte(tt.in), tt.vr)
			if d := cmp.Diff(tt.want, got); d != "" || ok != tt.ok {
				t.Errorf("decode ok=%v (want %v) (-want +got):\n%s", ok, tt.ok, d)
			}
		})
	}
	for _, bad := range []string{"ISO_IR 999", `\ISO 2022 IR 999`, "KOI8-R"} {
		if cs := newCharset(bad); len(cs.unknown) == 0 {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestISODateTime(t *testing.T) {
	for in, want := range map[string]string{"20260115": "2026-01-15", "2026.01.15": "2026-01-15", "20261315": "", "2026": "", "": ""} {
		got, _ := ISODate(in)
		if got != want {
			t.Errorf("ISODate(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"101500.25": "10:15:00.25", "1015": "10:15", "10": "10", "10:15:00": "10:15:00", "2500": "", "10150": "", "1015.5": ""} {
		got, _ := ISOTime(in)
		if got != want {
			t.Errorf("ISOTime(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParsePersonName(t *testing.T) {
	got := ParsePersonName("Yamada^Tarou^^Dr.^=山田^太郎=やまだ^たろう")
	want := PersonNameGroups{
		Alphabetic:  &PersonName{Family: "Yamada", Given: "Tarou", Prefix: "Dr."},
		Ideographic: &PersonName{Family: "山田", Given: "太郎"},
		Phonetic:    &PersonName{Family: "やまだ", Given: "たろう"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if d := cmp.Diff(PersonNameGroups{}, ParsePersonName("^^")); d != "" {
		t.Errorf("empty name: %s", d)
	}
}

// TestConformanceStatementCharsets: every Specific Character Set term
// conformance.md's section 5 lists is one the pipeline decodes, the ISO 2022
// form of each single-byte set included, and every term it decodes is
// listed: each single-byte set, and each of the standard's Defined Terms.
func TestConformanceStatementCharsets(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "conformance.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(b), "\n## 5. ")
	section, _, _ = strings.Cut(section, "\n## ")
	_, table, ok := strings.Cut(section, "| Specific Character Set | Character set |\n")
	if !ok {
		t.Fatal("conformance.md's section 5 has no table of Specific Character Sets")
	}
	listed := map[string]bool{}
	for _, row := range strings.Split(table, "\n") {
		if !strings.HasPrefix(row, "|") {
			break
		}
		first, _, _ := strings.Cut(strings.TrimPrefix(row, "|"), "|")
		for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(first, -1) {
			if m[1] != "ISO 2022 IR" { // "the `ISO 2022 IR` forms of each single-byte set above"
				listed[m[1]] = true
			}
		}
	}
	if len(listed) == 0 {
		t.Fatal("conformance.md's table of Specific Character Sets names no term")
	}
	for term := range listed {
		if cs := newCharset(term); len(cs.unknown) > 0 {
			t.Errorf("conformance.md lists %q, which validation reports as unknown", term)
		}
	}
	for term := range singleByte {
		if !listed[term] {
			t.Errorf("conformance.md does not list %q, which the pipeline decodes", term)
		}
		// The table says the ISO 2022 form of each single-byte set above is supported.
		if iso := strings.Replace(term, "ISO_IR", "ISO 2022 IR", 1); len(newCharset(iso).unknown) > 0 {
			t.Errorf("%q is not decoded, though conformance.md says the ISO 2022 form of each single-byte set is", iso)
		}
	}
	// Every Defined Term of the standard (PS3.3 C.12.1.1.2, Tables C.12-2
	// to C.12-5; and ISO_IR 6, which senders write for the default
	// repertoire) is listed if and only if it is decoded, the multi-byte
	// sets included.
	for _, term := range []string{
		"ISO_IR 6", "ISO_IR 100", "ISO_IR 101", "ISO_IR 109", "ISO_IR 110", "ISO_IR 144", "ISO_IR 127", "ISO_IR 126",
		"ISO_IR 138", "ISO_IR 148", "ISO_IR 203", "ISO_IR 13", "ISO_IR 166",
		"ISO 2022 IR 6", "ISO 2022 IR 100", "ISO 2022 IR 101", "ISO 2022 IR 109", "ISO 2022 IR 110", "ISO 2022 IR 144",
		"ISO 2022 IR 127", "ISO 2022 IR 126", "ISO 2022 IR 138", "ISO 2022 IR 148", "ISO 2022 IR 203", "ISO 2022 IR 13",
		"ISO 2022 IR 166",
		"ISO 2022 IR 87", "ISO 2022 IR 159", "ISO 2022 IR 149", "ISO 2022 IR 58",
		"ISO_IR 192", "GB18030", "GBK",
	} {
		decoded := len(newCharset(term).unknown) == 0
		inDoc := listed[term] || listed[strings.Replace(term, "ISO 2022 IR", "ISO_IR", 1)]
		switch {
		case decoded && !inDoc:
			t.Errorf("conformance.md does not list %q, which the pipeline decodes", term)
		case !decoded && inDoc:
			t.Errorf("conformance.md lists %q, which validation reports as unknown", term)
		}
	}
}
