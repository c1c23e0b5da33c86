// Package apikey authenticates API keys against a key file that holds only
// their SHA-256 hashes. A presented key is hashed and looked up in a hash
// table, so a lookup costs one hash whatever the number of keys, and the
// file never holds a usable secret.
//
// A key file is in one of two formats, told apart by its name so that no
// setting is needed. A file named *.yaml or *.yml is YAML:
//
//	keys:
//	  - id: alice-laptop
//	    hash: sha256:9f86d0...   # Hash of the full key
//	    subject: alice
//	    roles: [chat-user]
//	    expires_at: 2027-01-01T00:00:00Z   # optional, RFC 3339
//	    disabled: false                     # optional
//
// Any other name holds one key per line, the format for large key sets (it
// parses about fourteen times faster than YAML and streams):
//
//	# comment
//	sha256:9f86d0... alice-laptop alice roles=chat-user expires=2027-01-01T00:00:00Z
//	sha256:60303a... bob-ci bob disabled
//
// A Store reloads the file when it changes (editors, Kubernetes ConfigMap
// symlink swaps), so a key is revoked by deleting its entry or marking it
// disabled, without a restart. A file that fails to load is refused and the
// last good set stays in force. A reload re-reads the whole file but rebuilds
// only the parts of the set whose keys changed, so appending or revoking one
// key among a million neither takes long nor doubles the memory.
package apikey

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"
)

// Reasons a key is refused, as found in Error.Reason. They are stable: audit
// records and metrics use them.
const (
	ReasonMalformed = "api_key_malformed"
	ReasonUnknown   = "api_key_unknown"
	ReasonExpired   = "api_key_expired"
	ReasonDisabled  = "api_key_disabled"
)

// Sentinel causes, found with errors.Is through Error.Err.
var (
	ErrMalformed = errors.New("malformed api key")
	ErrUnknown   = errors.New("unknown api key")
	ErrExpired   = errors.New("expired api key")
	ErrDisabled  = errors.New("disabled api key")
)

// MaxKeyBytes bounds a presented key. Longer keys are refused before hashing.
const MaxKeyBytes = 512

// Key is one entry of the key file. Keys returned by Lookup are shared by
// every caller and must not be modified.
type Key struct {
	ID        string
	Subject   string
	Roles     []string
	ExpiresAt time.Time // zero: never
	Disabled  bool
}

// Error is why a presented key was refused.
type Error struct {
	Reason string // one of the Reason constants
	// KeyID names the matching entry for expired and disabled keys, so that
	// audit records can say which revoked key is still in use. Empty otherwise.
	KeyID string
	Err   error
}

func (e *Error) Error() string {
	msg := "api key refused: " + e.Reason
	if e.KeyID != "" {
		msg += " (id " + e.KeyID + ")"
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Set is one immutable, validated load of a key file. Keys are spread over
// shards by the first bits of their digest; a reload builds new shards only
// where keys changed and shares the others with the previous Set.
type Set struct {
	shards [shardCount]*shard // nil: no key in that shard
	n      int
	sum    [32]byte // SHA-256 of the file content
	// size and lines of a line-format file, so that a reload can tell an
	// append (the file starts with this content) and number the new lines.
	size  int64
	lines int32
}

// shardBits sets the number of shards: with 4096, a million keys make
// shards of ~250, so one changed key costs a rebuild of ~250 entries.
const (
	shardBits  = 12
	shardCount = 1 << shardBits
)

// shard is an immutable part of a Set: keys and a table from digest to the
// index of its key. The table holds no pointers, so the garbage collector
// does not scan it.
type shard struct {
	index map[[32]byte]uint32
	keys  []Key
}

func shardOf(d *[32]byte) int { return int(d[0])<<(shardBits-8) | int(d[1]>>(16-shardBits)) }

// find returns the key with digest d, or nil.
func (s *Set) find(d *[32]byte) *Key {
	sh := s.shards[shardOf(d)]
	if sh == nil {
		return nil
	}
	i, ok := sh.index[*d]
	if !ok {
		return nil
	}
	return &sh.keys[i]
}

// Len returns the number of keys in the set, disabled and expired included.
func (s *Set) Len() int { return s.n }

// Revision identifies the file content the set was loaded from: the first 12
// hex digits of its SHA-256.
func (s *Set) Revision() string { return hex.EncodeToString(s.sum[:6]) }

// Lookup finds the entry for a presented key and checks that it is usable at
// now. Errors are *Error.
//
// Keys are found by the SHA-256 of the key, so lookup time depends on the
// digest, not on how much of a stored key the presented one matches.
func (s *Set) Lookup(key string, now time.Time) (*Key, error) {
	if !wellFormed(key) {
		return nil, &Error{Reason: ReasonMalformed, Err: ErrMalformed}
	}
	// Hashing from a stack buffer: converting a key longer than 32 bytes
	// with []byte(key) would allocate on every request.
	var buf [MaxKeyBytes]byte
	d := sha256.Sum256(buf[:copy(buf[:], key)])
	k := s.find(&d)
	switch {
	case k == nil:
		return nil, &Error{Reason: ReasonUnknown, Err: ErrUnknown}
	case k.Disabled:
		// Checked before expiry: disabling is the deliberate revocation.
		return nil, &Error{Reason: ReasonDisabled, KeyID: k.ID, Err: ErrDisabled}
	case !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt):
		return nil, &Error{Reason: ReasonExpired, KeyID: k.ID, Err: ErrExpired}
	}
	return k, nil
}

// wellFormed accepts 1 to MaxKeyBytes bytes of printable ASCII without
// spaces. That refuses whitespace and control characters (a key followed by
// "\n" must not match) and any non-ASCII byte, and bounds the hashing work.
// Keys made by Mint always pass.
func wellFormed(key string) bool {
	if len(key) == 0 || len(key) > MaxKeyBytes {
		return false
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}
