package kongharness

import "testing"

func TestEscape(t *testing.T) {
	if got := Escape("/t/Abc 123\u00f8%2F/test/"); got != "/t/Abc%20123%C3%B8%2F/test/" {
		t.Errorf("Escape: %q", got)
	}
}
