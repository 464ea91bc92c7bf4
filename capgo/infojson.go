package capgo

import (
	"encoding/json"
	"strings"
)

// ParseInfoInto is ParseInfo into a caller's Info, so a request handler can
// keep it on its stack.
//
// The plugin's bodies are one flat object of ASCII keys and values without
// escapes. Those are decoded by a direct scan, every field a substring of
// one copy of the body (one allocation instead of encoding/json's
// reflection, one allocation per field and a call per Str). Anything else
// (escapes, non-ASCII bytes, nested values, a key that matches a field only
// case-insensitively, malformed JSON) goes to encoding/json, which then
// decides: the result is the same either way, FuzzParseInfoMatchesJSON
// holds the two to it.
func ParseInfoInto(body []byte, in *Info) error {
	if len(body) > MaxInfoBody {
		return badRequest("body of %d bytes is over the limit of %d", len(body), MaxInfoBody)
	}
	*in = Info{}
	if !scanInfo(string(body), in) {
		// Decoded into a copy: handing in itself to encoding/json would
		// make every caller's Info escape to the heap.
		var slow Info
		if err := json.Unmarshal(body, &slow); err != nil {
			*in = Info{}
			return badRequest("body must be a JSON object: %v", err)
		}
		*in = slow
	}
	return in.Validate()
}

// infoField is where a key of the info object goes.
type infoField struct {
	str  *Str
	bool *Bool
}

// field returns the destination of an exact key, or ok=false for a key
// that is not a field. fold reports a key that encoding/json would match
// to a field case-insensitively: the caller leaves those to it.
func (in *Info) field(key string) (f infoField, ok, fold bool) {
	switch key {
	case "platform":
		return infoField{str: &in.Platform}, true, false
	case "device_id":
		return infoField{str: &in.DeviceID}, true, false
	case "app_id":
		return infoField{str: &in.AppID}, true, false
	case "custom_id":
		return infoField{str: &in.CustomID}, true, false
	case "version_build":
		return infoField{str: &in.VersionBuild}, true, false
	case "version_code":
		return infoField{str: &in.VersionCode}, true, false
	case "version_os":
		return infoField{str: &in.VersionOS}, true, false
	case "version_name":
		return infoField{str: &in.VersionName}, true, false
	case "plugin_version":
		return infoField{str: &in.PluginVersion}, true, false
	case "install_source":
		return infoField{str: &in.InstallSource}, true, false
	case "defaultChannel":
		return infoField{str: &in.DefaultChannel}, true, false
	case "key_id":
		return infoField{str: &in.KeyID}, true, false
	case "channel":
		return infoField{str: &in.Channel}, true, false
	case "is_emulator":
		return infoField{bool: &in.IsEmulator}, true, false
	case "is_prod":
		return infoField{bool: &in.IsProd}, true, false
	}
	for _, name := range infoFieldNames {
		if len(name) == len(key) && strings.EqualFold(name, key) {
			return infoField{}, false, true
		}
	}
	return infoField{}, false, false
}

var infoFieldNames = [...]string{"platform", "device_id", "app_id", "custom_id", "version_build", "version_code", "version_os",
	"version_name", "plugin_version", "install_source", "defaultChannel", "key_id", "channel", "is_emulator", "is_prod"}

// scanInfo decodes s into in when s is a flat object of plain ASCII keys
// and values. It returns false, with in partly written, for anything else.
func scanInfo(s string, in *Info) bool {
	i := skipSpace(s, 0)
	if i >= len(s) || s[i] != '{' {
		return false
	}
	i = skipSpace(s, i+1)
	if i < len(s) && s[i] == '}' {
		return skipSpace(s, i+1) == len(s)
	}
	for {
		key, next, ok := plainString(s, i)
		if !ok {
			return false
		}
		i = skipSpace(s, next)
		if i >= len(s) || s[i] != ':' {
			return false
		}
		i = skipSpace(s, i+1)
		if i >= len(s) {
			return false
		}
		f, _, fold := in.field(key)
		if fold {
			return false
		}
		switch c := s[i]; {
		case c == '"':
			v, next, ok := plainString(s, i)
			if !ok {
				return false
			}
			i = next
			switch {
			case f.str != nil:
				*f.str = Str(v)
			case f.bool != nil:
				// Bool.UnmarshalJSON's quoted forms.
				switch v {
				case "true":
					*f.bool = true
				case "false", "":
					*f.bool = false
				default:
					return false
				}
			}
		case c == 't' || c == 'f' || c == 'n':
			lit := ""
			switch {
			case strings.HasPrefix(s[i:], "true"):
				lit = "true"
			case strings.HasPrefix(s[i:], "false"):
				lit = "false"
			case strings.HasPrefix(s[i:], "null"):
				lit = "null"
			default:
				return false
			}
			i += len(lit)
			switch {
			case f.str != nil && lit == "null":
				*f.str = ""
			case f.str != nil:
				*f.str = Str(lit)
			case f.bool != nil:
				*f.bool = lit == "true"
			}
		case c == '-' || c >= '0' && c <= '9':
			end, ok := number(s, i)
			if !ok || f.bool != nil {
				return false
			}
			if f.str != nil {
				*f.str = Str(s[i:end])
			}
			i = end
		default:
			// Objects and arrays (in unknown fields) and anything invalid.
			return false
		}
		i = skipSpace(s, i)
		if i >= len(s) {
			return false
		}
		switch s[i] {
		case ',':
			i = skipSpace(s, i+1)
		case '}':
			return skipSpace(s, i+1) == len(s)
		default:
			return false
		}
	}
}

func skipSpace(s string, i int) int {
	for i < len(s) && s[i] <= ' ' && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

// plainByte marks the bytes a plain string holds: printable ASCII and
// DEL, not a quote or a backslash.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// plainString reads the JSON string starting at s[i] (a quote) when it
// holds only printable ASCII and no escapes; it returns its content and the
// index after the closing quote.
func plainString(s string, i int) (string, int, bool) {
	if i >= len(s) || s[i] != '"' {
		return "", 0, false
	}
	j := i + 1
	for j < len(s) && plainByte[s[j]] {
		j++
	}
	if j < len(s) && s[j] == '"' {
		return s[i+1 : j], j + 1, true
	}
	return "", 0, false
}

// number returns the end of the JSON number starting at s[i].
func number(s string, i int) (int, bool) {
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	default:
		return 0, false
	}
	if i < len(s) && s[i] == '.' {
		i++
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == start {
			return 0, false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == start {
			return 0, false
		}
	}
	return i, true
}
