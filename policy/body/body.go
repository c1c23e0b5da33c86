// Package body turns a request body, as a gateway received it, into the one
// value that both the JSON Schema check and the Rego policy inspect. Envoy
// and Kong requests go through the same two steps:
//
//	raw, err := body.Decode(req.Body, req.BodyTruncated, contentEncoding, lim) // size, truncation, Content-Encoding
//	v, err := body.Parse(raw, lim)                                             // strict JSON
//
// Parse is deliberately stricter than encoding/json, which silently turns
// invalid UTF-8 and lone surrogates into U+FFFD and keeps the last of
// duplicate keys: when two readers of one body could see different values
// (this check, the upstream model server, another validator), the request
// is refused instead. Every refusal is an *Error carrying the HTTP status to
// answer (400, 413 or 415), a stable reason code and a client-safe message
// that never quotes body text beyond the JSON pointer of the place.
//
// Decisions made here, so that every consumer handles these the same way:
//   - Numbers whose magnitude overflows float64 (1e400, -1e400, or an
//     integer of more than 308 digits that is too large) are refused as
//     body_number_invalid: some validators would compare them as ±Inf,
//     others refuse them. Underflow (1e-400) is a valid number that rounds to
//     zero and is accepted, as encoding/json does. Numbers keep their exact
//     text as json.Number.
//   - Strings in the result never share memory with the body: each is a
//     copy of its own, or a string of Limits.Vocab (immutable, owned by the
//     configuration), or shared with an equal string of the same body. So
//     keeping one (a metrics label, a cache key, a cached decision that
//     quotes it) keeps neither the body nor the other strings alive. Parse
//     deliberately does not cut strings out of one copy of the whole body:
//     that saves an allocation per long string, but any string kept longer
//     than the request (a decision cache entry holding input.parsed_body's
//     "user") would then pin a body of up to MaxBytes.
//   - Keys are compared after unescaping: "model" and "mod\u0065l" are
//     duplicates (body_duplicate_key). Keys equal under the simple case
//     folding encoding/json uses to match struct fields ("model" and
//     "MODEL", "k" and the Kelvin sign U+212A, "s" and the long s U+017F)
//     are refused as body_ambiguous_key: this check would read one and a
//     model server decoding into a struct the other.
//   - A byte order mark is not whitespace: a body starting with one is not
//     JSON (encoding/json agrees).
//   - Stacked content codings ("gzip, gzip") are refused with 415: clients do
//     not send them, and every layer would multiply the decompression work.
//   - "deflate" is the zlib format (RFC 9110 section 8.4.1.2); a raw DEFLATE
//     stream without the zlib wrapper is refused as body_decompression_failed
//     rather than guessed at. Data after the end of a compressed stream is
//     refused too.
package body

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// Defaults for zero Limits fields.
const (
	DefaultMaxBytes = 1 << 20 // 1 MiB
	DefaultMaxDepth = 64

	maxMaxBytes = 1 << 30
	maxMaxDepth = 10000
)

// Limits bounds the work spent on one body.
type Limits struct {
	// MaxBytes caps the body as received and again after decompression;
	// a bigger body gets 413. Zero or negative means DefaultMaxBytes; values
	// over 1 GiB count as 1 GiB (so size arithmetic cannot overflow).
	MaxBytes int
	// MaxDepth caps nesting (objects and arrays together; a top-level object
	// is depth 1); deeper gets 400. Zero or negative means DefaultMaxDepth;
	// values over 10000 count as 10000 (the parser recurses once per level).
	MaxDepth int
	// Names are the member names an error Message may show (names a schema
	// defines); other names are shown as "*", since the caller chose them.
	// Nil shows none. Error.Pointer always has the real names.
	Names Names
	// Vocab holds strings the body is likely to repeat (nil: none); Parse
	// returns keys and values equal to one of them without allocating.
	Vocab *Vocab
}

// Names tells which member names are not the caller's text.
type Names interface {
	Named(name string) bool
}

func (l Limits) maxBytes() int {
	if l.MaxBytes <= 0 {
		return DefaultMaxBytes
	}
	return min(l.MaxBytes, maxMaxBytes)
}

func (l Limits) maxDepth() int {
	if l.MaxDepth <= 0 {
		return DefaultMaxDepth
	}
	return min(l.MaxDepth, maxMaxDepth)
}

// Reason codes: stable, for operators, metrics and tests.
const (
	ReasonTooLarge            = "body_too_large"            // 413: over MaxBytes as received or after decompression
	ReasonTruncated           = "body_truncated"            // 413: the gateway cut the body short
	ReasonEncodingUnsupported = "body_encoding_unsupported" // 415: a Content-Encoding other than identity, gzip, x-gzip, deflate; or stacked codings
	ReasonDecompressionFailed = "body_decompression_failed" // 400: corrupt compressed stream, or data after its end
	ReasonNotJSON             = "body_not_json"             // 400: empty body or a JSON syntax error
	ReasonInvalidUTF8         = "body_invalid_utf8"         // 400: raw bytes that are not UTF-8
	ReasonLoneSurrogate       = "body_lone_surrogate"       // 400: a \u escape of half a UTF-16 surrogate pair
	ReasonInvalidEscape       = "body_invalid_escape"       // 400: an unknown escape such as \x, or \u without 4 hex digits
	ReasonControlCharacter    = "body_control_character"    // 400: a raw control character (below U+0020) in a string
	ReasonDuplicateKey        = "body_duplicate_key"        // 400: an object key appears twice
	ReasonAmbiguousKey        = "body_ambiguous_key"        // 400: two keys of one object differ only in letter case
	ReasonTooDeep             = "body_too_deep"             // 400: nesting over MaxDepth
	ReasonTrailingData        = "body_trailing_data"        // 400: anything but whitespace after the top-level value
	ReasonNumberInvalid       = "body_number_invalid"       // 400: not an RFC 8259 number, or overflows float64
)

const (
	maxKeyInPointer    = 64              // bytes of one key kept in a pointer
	pointerEnd         = 32              // bytes kept at each end of a long pointer in a Message
	truncatedKeyMarker = "..."           // marks a shortened key in a pointer
	messagePrefix      = "request body " // every Message starts with it
)

// Error is a client error: the status to answer, a stable reason code and a
// short message that is safe to send to the client.
type Error struct {
	Status int    // 400, 413 or 415
	Reason string // one of the Reason constants
	// Pointer is the RFC 6901 JSON pointer of the offending value or key
	// when known ("" is the whole document). Keys come from the client: a
	// key longer than 64 bytes is cut to its first 64 bytes followed by
	// "...", so a pointer stays short; treat it as untrusted text.
	Pointer string
	// Offset is the byte offset in the decoded body where the problem was
	// found, or -1 when it concerns the body as a whole.
	Offset int
	// Message names the rule and the place; it never quotes body text: the
	// pointer in it shows only names Limits.Names allows, "*" for others.
	Message string
}

func (e *Error) Error() string { return e.Reason + ": " + e.Message }

// wholeBodyError is an error about the body as a whole (size, encoding).
func wholeBodyError(status int, reason, rule string) *Error {
	return &Error{Status: status, Reason: reason, Offset: -1, Message: messagePrefix + rule}
}

// pathSeg is one step of the path to an error: an object key or an index.
type pathSeg struct {
	key   string
	index int // -1 for a key
}

// hiddenKey stands for a member name a Message may not show.
const hiddenKey = "*"

// pointer renders segments collected innermost first as an RFC 6901
// pointer; names is nil for every name as it is, or the names to show.
func pointer(segs []pathSeg, names Names, hide bool) string {
	if len(segs) == 0 {
		return ""
	}
	var b strings.Builder
	for i := len(segs) - 1; i >= 0; i-- {
		b.WriteByte('/')
		s := segs[i]
		if s.index >= 0 {
			b.WriteString(strconv.Itoa(s.index))
			continue
		}
		key, cut := s.key, false
		if hide && (names == nil || !names.Named(key)) {
			b.WriteString(hiddenKey)
			continue
		}
		if len(key) > maxKeyInPointer {
			n := maxKeyInPointer
			for n > 0 && !utf8.RuneStart(key[n]) {
				n--
			}
			key, cut = key[:n], true
		}
		for j := 0; j < len(key); j++ {
			switch c := key[j]; c {
			case '~':
				b.WriteString("~0")
			case '/':
				b.WriteString("~1")
			default:
				b.WriteByte(c)
			}
		}
		if cut {
			b.WriteString(truncatedKeyMarker)
		}
	}
	return b.String()
}

// location describes where a problem is for a Message: the pointer quoted
// with non-ASCII and control characters escaped (so a key cannot forge log
// lines or markup), its middle elided when long, and the byte offset.
func location(ptr string, offset int) string {
	if ptr == "" {
		return "(at byte " + strconv.Itoa(offset) + ")"
	}
	if len(ptr) > 2*pointerEnd+len(truncatedKeyMarker) {
		head, tail := pointerEnd, len(ptr)-pointerEnd
		for head > 0 && !utf8.RuneStart(ptr[head]) {
			head--
		}
		for tail < len(ptr) && !utf8.RuneStart(ptr[tail]) {
			tail++
		}
		ptr = ptr[:head] + truncatedKeyMarker + ptr[tail:]
	}
	return "(at " + strconv.QuoteToASCII(ptr) + ", byte " + strconv.Itoa(offset) + ")"
}
