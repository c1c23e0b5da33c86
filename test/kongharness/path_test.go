package kongharness

import "testing"

func TestEscape(t *testing.T) {
	if got := Escape("/t/Abc 123\u00f8%2F/test/"); got != "/t/Abc%20123%C3%B8%2F/test/" {
		t.Errorf("Escape: %q", got)
	}
}

// The harness models get_path on its own, not with the plugin's
// kongplugin/kongpath, so that a bug there cannot hide behind the harness:
// both are held to the cases of Kong's spec (spec/01-unit/04-utils_spec.lua,
// kong.tools.uri normalize) and of get_path's documentation.
func TestNormalizePath(t *testing.T) {
	for raw, want := range map[string]string{
		"":                       "",
		"/":                      "/",
		"/a/b/c/":                "/a/b/c/",
		"/a%2Fb%2Fc/":            "/a%2Fb%2Fc/",
		"/a%2fb":                 "/a%2Fb",
		"/v1/chat%2Fcompletions": "/v1/chat%2Fcompletions",
		"/%41%7e%2d":             "/A~-",
		"/a/./b/../c":            "/a/c",
		"/a/%2e%2e/b":            "/b",
		"//v1//chat/completions": "/v1/chat/completions",
		"/../../a":               "/a",
		"/t/Abc%20123%C3%B8%2f/parent/..//test/./": "/t/Abc 123\u00f8%2F/test/",
	} {
		if got := NormalizePath(raw); got != want {
			t.Errorf("NormalizePath(%q) = %q, want %q", raw, got, want)
		}
	}
}
