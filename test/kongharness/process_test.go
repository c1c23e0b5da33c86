package kongharness

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestValidate checks that Validate refuses what Kong would refuse.
func TestValidate(t *testing.T) {
	const good = `{"Protocol":"ProtoBuf:1","SocketPath":"/k/p.socket","Plugins":[{"Name":"p","Phases":["access","log"],"Version":"0.1.0","Priority":1010,
		"Schema":{"name":"p","fields":[{"config":{"type":"record","fields":[{"a":{"type":"string"}},{"b":{"type":"array","elements":{"type":"integer"}}},
		{"c":{"type":"map","keys":{"type":"string"},"values":{"type":"boolean"}}},{"d":{"type":"record","fields":[{"e":{"type":"number"}}]}}]}}]}}]}`
	tests := []struct {
		name, from, to, want string
	}{
		{"valid", "", "", ""},
		{"protocol", `"ProtoBuf:1"`, `"MsgPack:1"`, "protocol"},
		{"name", `"Name":"p"`, `"Name":"q"`, "name"},
		{"phase", `"access"`, `"header_filter"`, "phase"},
		{"four-part version", `"0.1.0"`, `"0.1.0.1"`, "version"},
		{"float priority", `1010`, `1010.5`, "priority"},
		{"json tag with options", `{"a":`, `{"a,omitempty":`, "field name"},
		{"unknown type", `"type":"integer"`, `"type":"int64"`, "not a Kong schema type"},
		{"array without elements", `"elements":{"type":"integer"}`, `"x":1`, "without elements"},
		{"nested", `"type":"number"`, `"type":"duration"`, "config.d.e"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dec := json.NewDecoder(strings.NewReader(strings.Replace(good, tc.from, tc.to, 1)))
			dec.UseNumber()
			var info Info
			if err := dec.Decode(&info); err != nil {
				t.Fatal(err)
			}
			err := info.Validate("p")
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate = %v, want an error about %q", err, tc.want)
			}
		})
	}
}
