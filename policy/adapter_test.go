package policy

import (
	"slices"
	"strings"
	"testing"

	"github.com/modelguard/modelguard/policy/config"
	"github.com/modelguard/modelguard/policy/models"
)

func TestDenyCarriesTheDecisionID(t *testing.T) {
	e, _ := testEngine(t, allowAll)
	d := e.Deny("d-1", 413, "body_too_large", "request too large")
	want := Decision{ID: "d-1", Status: 413, Reason: "body_too_large", Message: "request too large",
		ResponseHeaders: []Header{{"x-modelguard-decision-id", "d-1"}}, Start: d.Start}
	if d.Allow || d.Start.IsZero() || !slices.Equal(d.ResponseHeaders, want.ResponseHeaders) ||
		d.ID != want.ID || d.Status != want.Status || d.Reason != want.Reason || d.Message != want.Message {
		t.Fatalf("Deny = %+v, want %+v", d, want)
	}
	e.identity.DecisionID = ""
	if d := e.Deny(NewDecisionID(), 503, "internal_error", "service unavailable"); len(d.ResponseHeaders) != 0 || len(d.ID) != 32 {
		t.Fatalf("Deny without a decision header = %+v", d)
	}
}

func TestDenialHeaders(t *testing.T) {
	d := &Decision{ResponseHeaders: []Header{{"www-authenticate", "Bearer"}}}
	want := []Header{{"content-type", "application/json"}, {"www-authenticate", "Bearer"}}
	if got := d.DenialHeaders(); !slices.Equal(got, want) {
		t.Fatalf("DenialHeaders = %v, want %v", got, want)
	}
}

func TestAddHeader(t *testing.T) {
	h := map[string]string{}
	for _, l := range [][2]string{{"X-A", "1"}, {"x-a", "2"}, {"x-b", ""}, {"X-B", "3"}} {
		AddHeader(h, l[0], l[1])
	}
	if want := map[string]string{"x-a": "1,2", "x-b": ",3"}; len(h) != len(want) || h["x-a"] != want["x-a"] || h["x-b"] != want["x-b"] {
		t.Fatalf("AddHeader folded %v, want %v", h, want)
	}
}

func TestRequestID(t *testing.T) {
	tests := []struct {
		headers  map[string]string
		fallback string
		want     string
	}{
		{map[string]string{"x-request-id": "r1"}, "7", "r1"},
		{map[string]string{"x-request-id": ""}, "7", "7"},
		{nil, "", ""},
	}
	for _, tc := range tests {
		if got := RequestID(tc.headers, tc.fallback); got != tc.want {
			t.Errorf("RequestID(%v, %q) = %q, want %q", tc.headers, tc.fallback, got, tc.want)
		}
	}
}

// An adapter reading the body itself needs the largest cap of any model.
func TestMaxBodyBytes(t *testing.T) {
	cfg := &config.Config{RequestBody: models.BodySettings{MaxBytes: 1000},
		Models: []models.ModelSettings{{Limits: models.Limits{MaxBodyBytes: 5000}}, {Limits: models.Limits{MaxBodyBytes: 10}}}}
	if got := maxBodyBytes(cfg); got != 5000 {
		t.Fatalf("maxBodyBytes = %d, want 5000", got)
	}
}

func TestUnderscoreVariants(t *testing.T) {
	names := []string{"x-modelguard-subject", "x-api-key"}
	for _, tc := range []struct {
		headers map[string]string
		want    []string
	}{
		{map[string]string{"x-modelguard-subject": "a", "x-api-key": "k"}, nil},
		{map[string]string{"x_modelguard_subject": "root"}, []string{"x_modelguard_subject"}},
		{map[string]string{"x_modelguard-subject": "root"}, []string{"x_modelguard-subject"}},
		{map[string]string{"X_API_KEY": "k"}, []string{"X_API_KEY"}},
		{map[string]string{"x_modelguard_subjects": "x", "x_other": "y"}, nil},
	} {
		got := UnderscoreVariants(tc.headers, names)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%v: got %v, want %v", tc.headers, got, tc.want)
		}
	}
	plain := map[string]string{"content-type": "x", "x-api-key": "k"}
	allocs := testing.AllocsPerRun(100, func() { UnderscoreVariants(plain, names) })
	if allocs != 0 {
		t.Errorf("%v allocations without a variant", allocs)
	}
}

// Decision ids are 32 lower-case hex digits, each its own.
func TestNewDecisionID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewDecisionID()
		if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" || seen[id] {
			t.Fatalf("decision id %q: want 32 hex digits, new each time", id)
		}
		seen[id] = true
	}
}
