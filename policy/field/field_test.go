package field

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestUnder(t *testing.T) {
	other := errors.New("not about a field")
	for _, tt := range []struct {
		name   string
		prefix string
		err    error
		want   string
	}{
		{"key", "authentication.jwt", Errorf("issuers[0].leeway", "bad"), "authentication.jwt.issuers[0].leeway: bad"},
		{"index", "models", Errorf("[2].name", "bad"), "models[2].name: bad"},
		{"the section itself", "audit", Errorf("", "bad"), "audit: bad"},
		{"no prefix", "", Errorf("unknown_model_status", "bad"), "unknown_model_status: bad"},
		{"joined", "authorization", errors.Join(Errorf("timeout", "a"), other), "authorization.timeout: a\nnot about a field"},
		{"other errors unchanged", "audit", other, "not about a field"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := Under(tt.prefix, tt.err)
			if got.Error() != tt.want {
				t.Errorf("Under = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestChecks(t *testing.T) {
	var l List
	Range(&l, "n", 5, 1, 4)
	Range(&l, "ok", 4, 1, 4)
	Range(&l, "d", 0, time.Millisecond, time.Second)
	l.OneOf("level", "loud", "debug", "info")
	l.OneOf("ok", "info", "debug", "info")
	want := []string{
		"n: must be between 1 and 4, got 5",
		"d: must be between 1ms and 1s, got 0s",
		`level: "loud" is not one of debug, info`,
	}
	if len(l) != len(want) {
		t.Fatalf("got %d errors %v, want %d", len(l), l, len(want))
	}
	for i, err := range l {
		var fe *Error
		if !errors.As(err, &fe) || err.Error() != want[i] {
			t.Errorf("error %d = %v (%T), want *Error %q", i, err, err, want[i])
		}
	}
}

func TestCheckHTTPSURL(t *testing.T) {
	for _, tt := range []struct {
		url, want string
	}{
		{"https://idp.example/jwks", ""},
		{"http://127.0.0.1:8080/jwks", ""},
		{"http://localhost/jwks", ""},
		{"http://[::1]:1/jwks", ""},
		{"http://idp.example/jwks", "must use https: WHY (http is allowed for loopback hosts only)"},
		{"https://u:p@idp.example/", "must not carry credentials (user:password@): CREDS"},
		{"/jwks", `must be an absolute https URL, got "/jwks"`},
		{"ftp://idp.example/", "must be an absolute https URL"},
		{"https://idp.example/%zz", "invalid URL"},
	} {
		err := CheckHTTPSURL(tt.url, "CREDS", "WHY")
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.url, err)
		case tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want)):
			t.Errorf("%s: %v, want %q", tt.url, err, tt.want)
		}
	}
}

func TestIsHeaderName(t *testing.T) {
	for s, want := range map[string]bool{
		"x-api-key": true, "x_key.1~!#$%&'*+^`|": true,
		"": false, "X-Api-Key": false, "x api": false, "x:key": false, "x-ké": false,
	} {
		if got := IsHeaderName(s); got != want {
			t.Errorf("IsHeaderName(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestCheckFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		file:                       "",
		dir:                        "is a directory, want a file",
		filepath.Join(dir, "nope"): "no such file",
	} {
		err := CheckFile(path)
		if (err == nil) != (want == "") || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("CheckFile(%s) = %v, want %q", path, err, want)
		}
	}
}
