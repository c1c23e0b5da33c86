package jwtauth

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"unicode/utf8"
)

// The helpers here read a token's header and payload before golang-jwt does,
// without allocating: to route by "iss" and to refuse bad headers early.
// They need not validate JSON fully (golang-jwt decodes it again and
// rejects what encoding/json rejects); they must only never disagree with
// encoding/json in a way that accepts: a key spelled with escapes is
// unescaped before comparing, and duplicates of the keys we read are refused.

var errJSONSyntax = errors.New("invalid JSON object")

// strictB64 refuses non-zero trailing bits, as golang-jwt's WithStrictDecoding.
var strictB64 = base64.RawURLEncoding.Strict()

// decodeSegment decodes a base64url segment into buf, which it grows as
// needed, and returns the decoded bytes (aliasing buf) and the buffer.
func decodeSegment(buf []byte, seg string) ([]byte, []byte, error) {
	need := len(seg) + strictB64.DecodedLen(len(seg))
	if cap(buf) < need {
		buf = make([]byte, need)
	}
	buf = buf[:need]
	src := buf[:copy(buf, seg)]
	n, err := strictB64.Decode(buf[len(seg):], src)
	if err != nil {
		return nil, buf, err
	}
	return buf[len(seg) : len(seg)+n], buf, nil
}

// scanObject calls fn with each top-level member of the JSON object in data:
// the key still quoted and escaped, and the raw value.
func scanObject(data []byte, fn func(key, val []byte) error) error {
	i := skipWS(data, 0)
	if i >= len(data) || data[i] != '{' {
		return errJSONSyntax
	}
	i = skipWS(data, i+1)
	if i < len(data) && data[i] == '}' {
		return endOfObject(data, i)
	}
	for {
		if i >= len(data) || data[i] != '"' {
			return errJSONSyntax
		}
		kend, err := skipString(data, i)
		if err != nil {
			return err
		}
		key := data[i:kend]
		i = skipWS(data, kend)
		if i >= len(data) || data[i] != ':' {
			return errJSONSyntax
		}
		i = skipWS(data, i+1)
		vend, err := skipValue(data, i)
		if err != nil {
			return err
		}
		if err := fn(key, data[i:vend]); err != nil {
			return err
		}
		i = skipWS(data, vend)
		if i >= len(data) {
			return errJSONSyntax
		}
		switch data[i] {
		case ',':
			i = skipWS(data, i+1)
		case '}':
			return endOfObject(data, i)
		default:
			return errJSONSyntax
		}
	}
}

// endOfObject accepts only white space after the closing brace at i.
func endOfObject(data []byte, i int) error {
	if skipWS(data, i+1) != len(data) {
		return errJSONSyntax
	}
	return nil
}

func skipWS(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index after the string starting at data[i] == '"'.
func skipString(data []byte, i int) (int, error) {
	for j := i + 1; j < len(data); j++ {
		switch c := data[j]; {
		case c == '\\':
			j++
		case c == '"':
			return j + 1, nil
		case c < 0x20:
			return 0, errJSONSyntax
		}
	}
	return 0, errJSONSyntax
}

// skipValue returns the index after the value starting at data[i].
func skipValue(data []byte, i int) (int, error) {
	if i >= len(data) {
		return 0, errJSONSyntax
	}
	switch data[i] {
	case '"':
		return skipString(data, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(data); j++ {
			switch data[j] {
			case '"':
				end, err := skipString(data, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errJSONSyntax
	default: // number, true, false, null
		j := i
		for j < len(data) {
			switch data[j] {
			case ',', '}', ']', ' ', '\t', '\r', '\n':
				goto end
			}
			j++
		}
	end:
		if j == i {
			return 0, errJSONSyntax
		}
		return j, nil
	}
}

// jsonString returns the content of a raw JSON string value. Without escapes
// it aliases raw; with them, or with invalid UTF-8 (which encoding/json
// reads as U+FFFD), it is decoded by encoding/json (allocating), so
// "https:\/\/idp" reads as encoding/json reads it.
func jsonString(raw []byte) ([]byte, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return nil, false
	}
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return inner, true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, false
	}
	return []byte(s), true
}

// keyIs reports whether the quoted raw key equals name once unescaped.
func keyIs(quoted []byte, name string) bool {
	k, ok := jsonString(quoted)
	return ok && string(k) == name
}
