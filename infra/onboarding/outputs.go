package onboarding

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// ErrMissingOutput is returned when a stack output the kit needs is absent.
var ErrMissingOutput = errors.New("missing stack output")

// maxOutputsSize bounds what ParseOutputs reads: a real outputs file is a few
// kilobytes, so anything near this limit is not one.
const maxOutputsSize = 4 << 20

// Outputs holds the stack outputs written by `cdk deploy --outputs-file`,
// merged over all stacks in the file.
type Outputs struct {
	// byNorm maps a normalized output key (see normKey) to its value.
	byNorm map[string]output
}

type output struct {
	stack, key, value string
}

// ParseOutputs reads a `cdk deploy --outputs-file` document:
// {"StackName": {"OutputKey": "value", ...}, ...}. Outputs from every stack
// are merged; the same key with different values in two stacks is an error,
// because the kit could not tell which one the site must use.
func ParseOutputs(r io.Reader) (Outputs, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxOutputsSize+1))
	if err != nil {
		return Outputs{}, fmt.Errorf("read outputs: %w", err)
	}
	if len(data) > maxOutputsSize {
		return Outputs{}, fmt.Errorf("read outputs: larger than %d bytes", maxOutputsSize)
	}
	var stacks map[string]map[string]json.RawMessage
	if err := json.Unmarshal(data, &stacks); err != nil {
		return Outputs{}, fmt.Errorf("parse outputs: %w", err)
	}
	names := make([]string, 0, len(stacks))
	for name := range stacks {
		names = append(names, name)
	}
	sort.Strings(names) // deterministic error messages
	o := Outputs{byNorm: map[string]output{}}
	for _, stack := range names {
		for key, raw := range stacks[stack] {
			val, err := outputValue(raw)
			if err != nil {
				return Outputs{}, fmt.Errorf("parse outputs: %s.%s: %w", stack, key, err)
			}
			n := normKey(key)
			if prev, ok := o.byNorm[n]; ok && prev.value != val {
				return Outputs{}, fmt.Errorf("parse outputs: %s.%s and %s.%s disagree", prev.stack, prev.key, stack, key)
			}
			o.byNorm[n] = output{stack: stack, key: key, value: val}
		}
	}
	return o, nil
}

// outputValue accepts a JSON string, or a number or boolean (CloudFormation
// outputs are strings, but a hand-written file may hold a bare port number).
func outputValue(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err == nil {
		return n.String(), nil
	}
	var b bool
	if err := json.Unmarshal(raw, &b); err == nil {
		return fmt.Sprint(b), nil
	}
	return "", errors.New("value is not a string, number or boolean")
}

// Lookup returns the output named name (a logical id such as
// "Tunnel1AddressSiteA"). Keys are compared after normalization (case and
// non-alphanumerics ignored). CDK outputs declared inside a construct get the
// construct path as a prefix and an 8-hex-digit hash as a suffix, so a stored
// key also matches when it ends with the name, optionally followed by such a
// hash: "VpnTunnel1AddressSiteA5F3A9C21" matches "Tunnel1AddressSiteA". An
// exact match wins; otherwise the match must be unique.
func (o Outputs) Lookup(name string) (string, bool) {
	want := normKey(name)
	if want == "" {
		return "", false
	}
	if v, ok := o.byNorm[want]; ok {
		return v.value, true
	}
	var found []output
	for n, v := range o.byNorm {
		base := n
		if len(n) > 8 && isHex(n[len(n)-8:]) && strings.HasSuffix(n[:len(n)-8], want) {
			base = n[:len(n)-8]
		}
		if strings.HasSuffix(base, want) {
			found = append(found, v)
		}
	}
	if len(found) == 1 {
		return found[0].value, true
	}
	return "", false
}

// VPNConnectionID returns the VPN connection id of site.
func (o Outputs) VPNConnectionID(site string) (string, bool) {
	for _, key := range []string{OutVPNConnection + site, OutVPNConnectionID + site} {
		if v, ok := o.Lookup(key); ok && strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// Keys returns the original output keys, sorted, for error messages.
func (o Outputs) Keys() []string {
	keys := make([]string, 0, len(o.byNorm))
	for _, v := range o.byNorm {
		keys = append(keys, v.key)
	}
	sort.Strings(keys)
	return keys
}

func normKey(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func isHex(s string) bool {
	for _, r := range s {
		if !((r >= '0' && r <= '9') || (r >= 'a' && r <= 'f')) {
			return false
		}
	}
	return true
}

// ParsePSKSecret reads the value of a site's pre-shared-key secret: either a
// JSON object holding one key per tunnel ({"tunnel1": "...", "tunnel2": "..."};
// key names are matched ignoring case and punctuation, and
// "Tunnel1PreSharedKey" or "psk1" work too), or a bare string used for both
// tunnels. It returns the keys by tunnel number.
func ParsePSKSecret(s string) (map[int]string, error) {
	trimmed := strings.TrimSpace(s)
	if strings.HasPrefix(trimmed, "{") {
		var obj map[string]any
		if err := json.Unmarshal([]byte(trimmed), &obj); err != nil {
			return nil, pskSyntaxError(err)
		}
		psks := map[int]string{}
		for k, v := range obj {
			str, ok := v.(string)
			if !ok {
				continue
			}
			switch normKey(k) {
			case "tunnel1", "tunnel1psk", "tunnel1presharedkey", "psk1", "presharedkey1":
				psks[1] = str
			case "tunnel2", "tunnel2psk", "tunnel2presharedkey", "psk2", "presharedkey2":
				psks[2] = str
			case "psk", "presharedkey":
				if _, ok := psks[1]; !ok {
					psks[1] = str
				}
				if _, ok := psks[2]; !ok {
					psks[2] = str
				}
			}
		}
		if psks[1] == "" || psks[2] == "" {
			return nil, errors.New("parse psk secret: want keys tunnel1 and tunnel2")
		}
		return psks, nil
	}
	if trimmed == "" {
		return nil, errors.New("parse psk secret: empty")
	}
	return map[int]string{1: trimmed, 2: trimmed}, nil
}

// pskSyntaxError is the error of a PSK secret that is not valid JSON. It
// names where the JSON broke, never what is there: encoding/json's errors
// quote the offending character ("invalid character 'k' after object key"),
// a byte of the secret, so err is neither wrapped nor printed.
func pskSyntaxError(err error) error {
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return fmt.Errorf("parse psk secret: not valid JSON: syntax error at byte %d of the value", se.Offset)
	}
	return errors.New("parse psk secret: not valid JSON")
}
