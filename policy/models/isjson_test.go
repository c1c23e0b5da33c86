package models

import "testing"

func TestIsJSON(t *testing.T) {
	for _, tc := range []struct {
		contentType string
		want        bool
	}{
		{"application/json", true},
		{"Application/JSON", true}, // media types are case-insensitive
		{"application/json; charset=utf-8", true},
		{"application/problem+json", true},
		{"application/jsonl", false},
		{"application/json-seq", false},
		{"text/plain", false},
		{"application/x-www-form-urlencoded", false},
		{"", false},
		{"application/json; charset", false}, // a malformed parameter
		{"application/j\u017fon", false},     // long s: folds to s, but is no token character
	} {
		if got := isJSON(tc.contentType); got != tc.want {
			t.Errorf("isJSON(%q) = %v, want %v", tc.contentType, got, tc.want)
		}
	}
}
