package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"time"
	"unicode/utf8"
)

// MinKeyBytes is the shortest HMAC key accepted for a keyed trail: the
// output size of SHA-256 (RFC 2104 section 3).
const MinKeyBytes = 32

// timeLayout is RFC 3339 in UTC with exactly six fractional digits.
const timeLayout = "2006-01-02T15:04:05.000000Z"

// hashMember is what follows the hash input in a line: `,"hash":"`, 64 hex
// digits, `"}` and the newline.
const (
	hashPrefix = `,"hash":"`
	hashSuffix = "\"}\n"
	hashTail   = len(hashPrefix) + 2*sha256.Size + len(hashSuffix)
)

// digest is a record hash.
type digest [sha256.Size]byte

// chainHash computes record hashes: SHA-256, or HMAC-SHA256 with a key.
// It is not safe for concurrent use.
type chainHash struct {
	h     hash.Hash
	keyed bool
	sum   []byte
	brace [1]byte // "}", kept here so that writing it does not allocate
}

func newChainHash(key []byte) *chainHash {
	if len(key) > 0 {
		return &chainHash{h: hmac.New(sha256.New, key), keyed: true}
	}
	return &chainHash{h: sha256.New()}
}

// of returns the hash of a record whose hash input is body followed by "}".
func (c *chainHash) of(body []byte) digest {
	c.h.Reset()
	c.h.Write(body)
	c.brace[0] = '}'
	c.h.Write(c.brace[:])
	c.sum = c.h.Sum(c.sum[:0])
	return digest(c.sum)
}

// appendRecord appends e as one record line with the given seq and prev,
// and returns the line's hash. e's own Seq, Prev and Hash are ignored.
func appendRecord(dst []byte, e *Event, seq uint64, prev *digest, c *chainHash) ([]byte, digest) {
	start := len(dst)
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"prev":"`...)
	dst = hex.AppendEncode(dst, prev[:])
	dst = append(dst, `","time":"`...)
	dst = appendTime(dst, e.Time)
	dst = append(dst, `","kind":`...)
	dst = appendString(dst, e.Kind)
	dst = appendField(dst, "decision_id", e.DecisionID)
	dst = appendField(dst, "request_id", e.RequestID)
	dst = appendField(dst, "gateway", e.Gateway)
	dst = appendField(dst, "subject", e.Subject)
	dst = appendField(dst, "auth_method", e.AuthMethod)
	dst = appendField(dst, "key_id", e.KeyID)
	dst = appendField(dst, "issuer", e.Issuer)
	dst = appendField(dst, "model", e.Model)
	dst = appendField(dst, "operation", e.Operation)
	dst = appendField(dst, "method", e.Method)
	dst = appendField(dst, "path", e.Path)
	dst = appendField(dst, "source_address", e.SourceAddress)
	dst = appendField(dst, "result", e.Result)
	if e.Status != 0 {
		dst = append(dst, `,"status":`...)
		dst = strconv.AppendInt(dst, int64(e.Status), 10)
	}
	dst = appendField(dst, "reason", e.Reason)
	dst = appendField(dst, "policy_revision", e.PolicyRevision)
	if e.LatencyMicros != 0 {
		dst = append(dst, `,"latency_us":`...)
		dst = strconv.AppendInt(dst, e.LatencyMicros, 10)
	}
	dst = appendField(dst, "body_sha256", e.BodySHA256)
	dst = appendField(dst, "body_check", e.BodyCheck)
	dst = appendField(dst, "rate_limit", e.RateLimit)
	dst = appendField(dst, "rate_limit_key", e.RateLimitKey)
	dst = appendField(dst, "trace_id", e.TraceID)
	dst = appendField(dst, "span_id", e.SpanID)
	dst = appendField(dst, "ip_list", e.IPList)
	dst = appendField(dst, "dlp", e.DLP)
	dst = appendField(dst, "shadow_result", e.ShadowResult)
	dst = appendField(dst, "shadow_reason", e.ShadowReason)
	dst = appendField(dst, "shadow_revision", e.ShadowRevision)
	dst = appendField(dst, "outcome", e.Outcome)
	dst = appendField(dst, "detail", e.Detail)
	dst = appendField(dst, "file", e.File)
	sum := c.of(dst[start:])
	dst = append(dst, hashPrefix...)
	dst = hex.AppendEncode(dst, sum[:])
	dst = append(dst, hashSuffix...)
	return dst, sum
}

// appendTime appends t in timeLayout. Written out because AppendFormat
// reads the layout again for every record (a third of a record's
// encoding, hash included); a year that does not take four digits is left
// to AppendFormat.
func appendTime(dst []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(dst, timeLayout)
	}
	hour, minute, sec := t.Clock()
	dst = appendDigits(dst, year, 4)
	dst = appendDigits(append(dst, '-'), int(month), 2)
	dst = appendDigits(append(dst, '-'), day, 2)
	dst = appendDigits(append(dst, 'T'), hour, 2)
	dst = appendDigits(append(dst, ':'), minute, 2)
	dst = appendDigits(append(dst, ':'), sec, 2)
	dst = appendDigits(append(dst, '.'), t.Nanosecond()/1000, 6) // truncated, as AppendFormat does
	return append(dst, 'Z')
}

// appendDigits appends the n low decimal digits of v >= 0, zero-padded.
func appendDigits(dst []byte, v, n int) []byte {
	var buf [6]byte
	for i := n - 1; i >= 0; i-- {
		buf[i] = byte('0' + v%10)
		v /= 10
	}
	return append(dst, buf[:n]...)
}

func appendField(dst []byte, name, v string) []byte {
	if v == "" {
		return dst
	}
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return appendString(dst, v)
}

// appendString appends s as a JSON string in the canonical escaping. Runs
// of bytes that need no escaping (valid UTF-8 included) are appended
// whole: a byte at a time was most of a record's encoding.
func appendString(dst []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	run := 0 // start of the bytes not appended yet
	for i := 0; i < len(s); {
		b := s[i]
		if b >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				dst = utf8.AppendRune(append(dst, s[run:i]...), utf8.RuneError)
				run = i + 1
			}
			i += size
			continue
		}
		if b >= 0x20 && b != '"' && b != '\\' {
			i++
			continue
		}
		dst = append(dst, s[run:i]...)
		switch b {
		case '"', '\\':
			dst = append(dst, '\\', b)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
		}
		i++
		run = i
	}
	dst = append(dst, s[run:]...)
	return append(dst, '"')
}

// errNotCanonical and errHashMismatch are the two ways a well-formed line
// can fail checkLine.
var (
	errNotCanonical = errors.New("record edited: not in the canonical encoding")
	errHashMismatch = errors.New("record edited: its hash does not match its content")
)

// checkLine decodes one line (with its newline) and checks that it is the
// canonical encoding of its content and that its hash is right under c. It
// returns the decoded event with Seq, Prev and Hash set. scratch is reused
// for the re-encoding and returned.
func checkLine(line []byte, c *chainHash, scratch []byte) (Event, digest, []byte, error) {
	var e Event
	if len(line) < hashTail || line[len(line)-1] != '\n' {
		return e, digest{}, scratch, errors.New("not a record: too short")
	}
	if err := json.Unmarshal(line, &e); err != nil {
		return e, digest{}, scratch, fmt.Errorf("not a record: %w", err)
	}
	var prev, stated digest
	if len(e.Prev) != 2*len(prev) || len(e.Hash) != 2*len(stated) {
		return e, digest{}, scratch, errNotCanonical
	}
	if _, err := hex.Decode(prev[:], []byte(e.Prev)); err != nil {
		return e, digest{}, scratch, errNotCanonical
	}
	if _, err := hex.Decode(stated[:], []byte(e.Hash)); err != nil {
		return e, digest{}, scratch, errNotCanonical
	}
	scratch, sum := appendRecord(scratch[:0], &e, e.Seq, &prev, c)
	body := len(line) - hashTail
	if !bytes.Equal(scratch[:len(scratch)-hashTail], line[:body]) || !bytes.Equal(line[body:body+len(hashPrefix)], []byte(hashPrefix)) {
		return e, sum, scratch, errNotCanonical
	}
	if sum != stated {
		return e, sum, scratch, errHashMismatch
	}
	if !bytes.Equal(scratch, line) { // e.g. the hash in upper case
		return e, sum, scratch, errNotCanonical
	}
	return e, sum, scratch, nil
}
