package gatewaypath

import "testing"

func TestEscaped(t *testing.T) {
	for _, tc := range []struct {
		s    string
		i    int
		want byte
		ok   bool
	}{
		{"%2f", 0, '/', true},
		{"%2F", 0, '/', true},
		{"a%41b", 1, 'A', true},
		{"%ff", 0, 0xff, true},
		{"%00", 0, 0, true},
		{"%4", 0, 0, false},
		{"%", 0, 0, false},
		{"%g1", 0, 0, false},
		{"%+1", 0, 0, false},
		{"%-1", 0, 0, false},
		{"%_1", 0, 0, false},
		{"%x1", 0, 0, false},
		{"a41", 0, 0, false},
		{"ab%41", 1, 0, false},
	} {
		got, ok := Escaped(tc.s, tc.i)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Escaped(%q, %d) = %#x, %v; want %#x, %v", tc.s, tc.i, got, ok, tc.want, tc.ok)
		}
	}
}
