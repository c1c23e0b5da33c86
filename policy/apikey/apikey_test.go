package apikey

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestSetLookup(t *testing.T) {
	set, err := Parse("keys.yaml", []byte(validFile))
	if err != nil {
		t.Fatal(err)
	}
	expiry := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) // of keyOld
	before := expiry.Add(-time.Second)

	tests := []struct {
		name   string
		key    string
		now    time.Time
		wantID string // set: a hit
		reason string // set: refused with this reason
		keyID  string // Error.KeyID
		cause  error
	}{
		{name: "hit", key: keyAlice, now: before, wantID: "alice-laptop"},
		{name: "hit without expiry, far future", key: keyBob, now: expiry.AddDate(100, 0, 0), wantID: "bob"},
		{name: "hit just before expiry", key: keyOld, now: before, wantID: "old"},
		{name: "expired at the instant", key: keyOld, now: expiry, reason: ReasonExpired, keyID: "old", cause: ErrExpired},
		{name: "expired after", key: keyOld, now: expiry.Add(time.Hour), reason: ReasonExpired, keyID: "old", cause: ErrExpired},
		{name: "disabled", key: keyOff, now: before, reason: ReasonDisabled, keyID: "off", cause: ErrDisabled},
		{name: "disabled and expired reports disabled", key: keyOff, now: time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC), reason: ReasonDisabled, keyID: "off", cause: ErrDisabled},
		{name: "unknown", key: keyCarol, now: before, reason: ReasonUnknown, cause: ErrUnknown},
		{name: "prefix of a key", key: keyAlice[:len(keyAlice)-1], now: before, reason: ReasonUnknown, cause: ErrUnknown},
		{name: "key with extra char", key: keyAlice + "0", now: before, reason: ReasonUnknown, cause: ErrUnknown},
		{name: "the stored hash itself", key: Hash(keyAlice), now: before, reason: ReasonUnknown, cause: ErrUnknown},
		{name: "longest allowed", key: strings.Repeat("k", MaxKeyBytes), now: before, reason: ReasonUnknown, cause: ErrUnknown},
		{name: "empty", key: "", now: before, reason: ReasonMalformed, cause: ErrMalformed},
		{name: "too long", key: strings.Repeat("k", MaxKeyBytes+1), now: before, reason: ReasonMalformed, cause: ErrMalformed},
		{name: "trailing newline", key: keyAlice + "\n", now: before, reason: ReasonMalformed, cause: ErrMalformed},
		{name: "trailing CR LF", key: keyAlice + "\r\n", now: before, reason: ReasonMalformed, cause: ErrMalformed},
		{name: "leading space", key: " " + keyAlice, now: before, reason: ReasonMalformed, cause: ErrMalformed},
		{name: "inner tab", key: "mg_a\tb", now: before, reason: ReasonMalformed, cause: ErrMalformed},
		{name: "NUL", key: keyAlice + "\x00", now: before, reason: ReasonMalformed, cause: ErrMalformed},
		{name: "DEL", key: keyAlice + "\x7f", now: before, reason: ReasonMalformed, cause: ErrMalformed},
		{name: "non-breaking space", key: keyAlice + "\u00a0", now: before, reason: ReasonMalformed, cause: ErrMalformed},
		{name: "non-ASCII", key: "mg_ключ", now: before, reason: ReasonMalformed, cause: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := set.Lookup(tt.key, tt.now)
			if tt.wantID != "" {
				if err != nil || k == nil || k.ID != tt.wantID {
					t.Fatalf("Lookup = %v, %v; want id %s", k, err, tt.wantID)
				}
				return
			}
			if k != nil {
				t.Errorf("refused key returned %+v", *k)
			}
			var ae *Error
			if !errors.As(err, &ae) {
				t.Fatalf("Lookup error %v (%T), want *Error", err, err)
			}
			if ae.Reason != tt.reason || ae.KeyID != tt.keyID || !errors.Is(err, tt.cause) {
				t.Errorf("got reason %q id %q cause %v, want %q %q %v", ae.Reason, ae.KeyID, ae.Err, tt.reason, tt.keyID, tt.cause)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("message %q lacks the reason", err)
			}
		})
	}
}

func TestErrorNeverShowsTheKey(t *testing.T) {
	set, err := Parse("keys.yaml", []byte(validFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{keyOff, keyCarol, keyAlice + "\n"} {
		_, err := set.Lookup(key, time.Now())
		if err == nil || strings.Contains(err.Error(), strings.TrimSpace(key)) {
			t.Errorf("Lookup error %q for %q: want an error that does not contain the key", err, key)
		}
	}
}

// BenchmarkLookup measures the request path through a Store with many keys.
func BenchmarkLookup(b *testing.B) {
	var file strings.Builder
	file.WriteString("keys:\n")
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprintf("mg_bench%038d", i)
		file.WriteString(entry(fmt.Sprintf("k%d", i), keys[i], "roles: [chat-user]"))
	}
	s, _ := openStore(b, file.String(), Options{})
	for _, bc := range []struct{ name, key string }{
		{"hit", keys[500]},
		{"miss", "mg_nobody000000000000000000000000000000000000"},
		{"malformed", keys[500] + "\n"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = s.Lookup(bc.key)
			}
		})
	}
}
