package proxyproto

import (
	"bytes"
	"errors"
	"net"
	"testing"
)

func TestParse(t *testing.T) {
	src := &net.TCPAddr{IP: net.ParseIP("10.1.2.3").To4(), Port: 40000}
	dst := &net.TCPAddr{IP: net.ParseIP("10.9.9.9").To4(), Port: 11112}
	src6 := &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 5}
	dst6 := &net.TCPAddr{IP: net.ParseIP("2001:db8::2"), Port: 6}
	withTLV := Append(nil, src, dst)
	withTLV[15] += 7
	withTLV = append(withTLV, 0xEA, 0, 4, 1, 'v', 'p', 'c')
	tests := []struct {
		name    string
		in      []byte
		cmd     Command
		src     string
		tlvs    int
		wantErr error
	}{
		{"ipv4", Append(nil, src, dst), CommandProxy, "10.1.2.3:40000", 0, nil},
		{"ipv6", Append(nil, src6, dst6), CommandProxy, "[2001:db8::1]:5", 0, nil},
		{"local", Append(nil, nil, nil), CommandLocal, "", 0, nil},
		{"tlv", withTLV, CommandProxy, "10.1.2.3:40000", 7, nil},
		{"v1 text", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), 0, "", 0, ErrNoSignature},
		{"dicom pdu", []byte{1, 0, 0, 0, 0, 10, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}, 0, "", 0, ErrNoSignature},
		{"short", Signature, 0, "", 0, ErrMalformed},
		{"bad version", append(append([]byte{}, Signature...), 0x11, 0x11, 0, 0), 0, "", 0, ErrMalformed},
		{"bad command", append(append([]byte{}, Signature...), 0x2F, 0x11, 0, 0), 0, "", 0, ErrMalformed},
		{"address too short", append(append([]byte{}, Signature...), 0x21, 0x11, 0, 4, 1, 2, 3, 4), 0, "", 0, ErrMalformed},
		{"truncated", Append(nil, src, dst)[:20], 0, "", 0, ErrMalformed},
		{"too long", append(append([]byte{}, Signature...), 0x21, 0x11, 0xFF, 0xFF), 0, "", 0, ErrMalformed},
		{"bad family", append(append([]byte{}, Signature...), 0x21, 0x51, 0, 0), 0, "", 0, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := Parse(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Command != tc.cmd {
				t.Errorf("command %d", h.Command)
			}
			got := ""
			if h.Source != nil {
				got = h.Source.String()
			}
			if got != tc.src {
				t.Errorf("source %q, want %q", got, tc.src)
			}
			if len(h.TLVs) != tc.tlvs {
				t.Errorf("%d TLV bytes, want %d", len(h.TLVs), tc.tlvs)
			}
		})
	}
}

func TestReadConsumesExactly(t *testing.T) {
	src := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1}
	dst := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 2}
	r := bytes.NewReader(append(Append(nil, src, dst), 0x01, 0x00))
	h, err := Read(r)
	if err != nil {
		t.Fatal(err)
	}
	if h.Source.String() != "192.0.2.1:1" || h.Destination.String() != "192.0.2.2:2" {
		t.Errorf("%v %v", h.Source, h.Destination)
	}
	if rest, _ := r.ReadByte(); rest != 0x01 {
		t.Errorf("next byte %#x, want the first PDU byte", rest)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Append(nil, &net.TCPAddr{IP: net.IPv4(1, 2, 3, 4), Port: 5}, &net.TCPAddr{IP: net.IPv4(5, 6, 7, 8), Port: 9}))
	f.Add(Append(nil, nil, nil))
	f.Add(Append(nil, &net.TCPAddr{IP: net.ParseIP("::1"), Port: 5}, &net.TCPAddr{IP: net.ParseIP("::2"), Port: 9}))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := Read(bytes.NewReader(b))
		if err != nil {
			return
		}
		if h.Command == CommandProxy && h.Family == 1 && h.Protocol == 1 && h.Source == nil {
			t.Fatal("TCP4 header without source")
		}
	})
}
