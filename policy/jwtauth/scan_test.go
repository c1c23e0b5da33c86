package jwtauth

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestScanObject(t *testing.T) {
	tests := []struct {
		in      string
		want    string // "key=value;" per member; ignored when wantErr
		wantErr bool
	}{
		{in: `{}`, want: ``},
		{in: ` { "a" : 1 , "b":"x" } `, want: `"a"=1;"b"="x";`},
		{in: `{"a":{"b":[1,"}",{"c":"]"}]},"d":true}`, want: `"a"={"b":[1,"}",{"c":"]"}]};"d"=true;`},
		{in: `{"a\"b":"c\\"}`, want: `"a\"b"="c\\";`},
		{in: `{"iss":"x"}junk`, wantErr: true},
		{in: `{"iss":"x"}{}`, wantErr: true},
		{in: `{"iss":"x",}`, wantErr: true},
		{in: `{"iss" "x"}`, wantErr: true},
		{in: `{"iss":}`, wantErr: true},
		{in: `{"iss":"x`, wantErr: true},
		{in: `{"iss":"x\`, wantErr: true},
		{in: "{\"iss\":\"a\nb\"}", wantErr: true},
		{in: `{"a":[1,2}`, wantErr: true},
		{in: `[]`, wantErr: true},
		{in: ``, wantErr: true},
		{in: `{iss:"x"}`, wantErr: true},
	}
	for _, tc := range tests {
		var got strings.Builder
		err := scanObject([]byte(tc.in), func(k, v []byte) error {
			got.WriteString(string(k) + "=" + string(v) + ";")
			return nil
		})
		if tc.wantErr {
			if err == nil {
				t.Errorf("scanObject(%q) accepted", tc.in)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("scanObject(%q) = %q, %v; want %q", tc.in, got.String(), err, tc.want)
		}
		// Whatever the scanner accepts here, encoding/json accepts too.
		var m map[string]any
		if err := json.Unmarshal([]byte(tc.in), &m); err != nil {
			t.Errorf("fixture %q is not valid JSON: %v", tc.in, err)
		}
	}
}

func TestJSONString(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{`"abc"`, "abc", true},
		{`"https:\/\/idp"`, "https://idp", true},
		{`"\u0069ss"`, "iss", true},
		{`"bad\x"`, "", false},
		{`42`, "", false},
		{`"`, "", false},
	}
	for _, tc := range tests {
		got, ok := jsonString([]byte(tc.in))
		if ok != tc.ok || string(got) != tc.want {
			t.Errorf("jsonString(%s) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
