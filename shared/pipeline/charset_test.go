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
		name, cs  string
		in        string
		want      string
		ok        bool
		delimited bool // a value of SH, LO, PN or UC, where 0x5C separates values
	}{
		{"default ascii", "", "Doe^John", "Doe^John", true, false},
		{"default with high bytes", "", "M\xfcller", "M\uFFFDller", false, false},
		{"latin-1", "ISO_IR 100", "Buc^J\xe9r\xf4me", "Buc^Jérôme", true, false},
		{"utf-8", "ISO_IR 192", "Wang^XiaoDong=王^小東=", "Wang^XiaoDong=王^小東=", true, false},
		{"utf-8 declared, latin-1 bytes", "ISO_IR 192", "M\xfcller", "M\uFFFDller", false, false},
		{"cyrillic", "ISO_IR 144", "\xbb\xee\xdace\xdc\xd1\xe3\xe0\xd3", "Люкceмбург", true, false},
		{"gb18030", "GB18030", "Wang^XiaoDong=\xcd\xf5^\xd0\xa1\xb6\xab=", "Wang^XiaoDong=王^小东=", true, false},
		// PS3.5 H.3.1: Japanese with ISO 2022 IR 87.
		{"iso 2022 ir 87", `\ISO 2022 IR 87`,
			"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B",
			"Yamada^Tarou=山田^太郎=やまだ^たろう", true, false},
		// PS3.5 I.2: Korean with ISO 2022 IR 149.
		{"iso 2022 ir 149", `\ISO 2022 IR 149`,
			"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf",
			"Hong^Gildong=洪^吉洞=홍^길동", true, false},
		{"iso 2022 ir 13 katakana", `ISO 2022 IR 13\ISO 2022 IR 87`, "\xd4\xcf\xc0\xde^\xc0\xdb\xb3", "ﾔﾏﾀﾞ^ﾀﾛｳ", true, false},
		{"iso 2022 unknown escape", `\ISO 2022 IR 87`, "a\x1b%Gb", "a\uFFFD%Gb", false, false},
		// ISO_IR 13 is JIS X 0201 (PS3.3 Table C.12-2): G0 Roman (ISO-IR
		// 14, 0x5C YEN SIGN, 0x7E OVERLINE), G1 katakana at 0xA1-0xDF.
		// Nothing else: Shift_JIS's kanji bytes do not fit it.
		{"iso_ir 13 roman and katakana", "ISO_IR 13", "1\\2~3\xb1\xdf", "1¥2‾3ｱﾟ", true, false},
		{"iso_ir 13 values", "ISO_IR 13", "A\\B~\xb1", "A\\B‾ｱ", true, true},
		// Nor kanji: a sender that labels Shift_JIS ISO_IR 13 (common in
		// Japan) has its two-byte characters read as Shift_JIS, as DCMTK
		// with ICU or glibc's iconv, Orthanc and pydicom read them, with
		// a charset-mismatch (ok false): kept readable and whole, a
		// second byte of 0x5C (能, 表, ソ) no delimiter.
		{"iso_ir 13 shift_jis kanji", "ISO_IR 13", "A\x8e\x52B", "A山B", false, false},
		{"iso_ir 13 shift_jis 0x5c second byte", "ISO_IR 13", "\x94\x5c\x93\x6f^\x91\xbe\x98\x59\\\x95\x5c", "能登^太郎\\表", false, true},
		{"iso_ir 13 shift_jis lead byte alone", "ISO_IR 13", "A\x8e", "A\uFFFD", false, false},
		{"iso_ir 13 shift_jis lead byte before a control", "ISO_IR 13", "\x8e\r\n", "\uFFFD\r\n", false, false},
		{"iso_ir 13 bytes beside katakana", "ISO_IR 13", "\x80\xa0\xa1\xe0\xfd", "\uFFFD\uFFFD｡\uFFFD\uFFFD", false, false},
		// ISO 2022 IR 13 (PS3.3 Table C.12-3): ESC ( J designates JIS X
		// 0201 Roman to G0, ESC ) I its katakana to G1; as value 1 both
		// are the initial designations, restored by control characters.
		{"iso 2022 esc ( j is roman", `\ISO 2022 IR 13`, "\x1b(J1\\2~\x1b(B3\\4~", "1¥2‾3\\4~", true, false},
		{"iso 2022 esc ( j values", `\ISO 2022 IR 13`, "\x1b(JA\\B~", "A\\B‾", true, true},
		{"iso 2022 esc ) i is katakana", `\ISO 2022 IR 13`, "a\x1b)I\xb1\xdf", "aｱﾟ", true, false},
		{"iso 2022 katakana only", `\ISO 2022 IR 13`, "\x1b)I\xe0\x40\xa0", "\uFFFD@\uFFFD", false, false},
		{"iso 2022 ir 13 initial roman", `ISO 2022 IR 13\ISO 2022 IR 87`, "1\\2~\xb1\x1b(B3\\4~\r\n5\\6~", "1¥2‾ｱ3\\4~\r\n5¥6‾", true, false},
		{"iso 2022 ir 13 after kanji", `ISO 2022 IR 13\ISO 2022 IR 87`, "\x1b$B;3\x1b(J\\~", "山¥‾", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := newCharset(tt.cs)
			if len(cs.unknown) > 0 {
				t.Fatalf("unknown terms %v", cs.unknown)
			}
			got, ok := cs.decode([]byte(tt.in), tt.delimited)
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
