package dlp

import (
	"slices"
	"strings"
	"testing"

	"github.com/modelguard/modelguard/test/testkit"
)

func TestDetectors(t *testing.T) {
	r := strings.Repeat
	for _, tc := range []struct {
		detector, text string
		want           bool
	}{
		{"openai_api_key", "my key is sk-" + r("A1b2", 12) + " ok", true},
		{"openai_api_key", "sk-proj-" + r("x_Y-9", 20), true},
		{"openai_api_key", "sk-svcacct-" + r("Ab", 30), true},
		{"openai_api_key", "use sk-learn for this", false},
		{"openai_api_key", "task-" + r("a", 60), false}, // not at a token start
		{"openai_api_key", "sk-ant-api03-" + r("a", 60), false},
		{"anthropic_api_key", "sk-ant-api03-" + r("Zz9_", 20), true},
		{"anthropic_api_key", "sk-ant-short", false},
		{"aws_access_key_id", "AKIAIOSFODNN7EXAMPLE", true},
		{"aws_access_key_id", "id=ASIAY34FZKBOKMUTVV7A;", true},
		{"aws_access_key_id", "AKIAIOSFODNN7EXAMPLE1", false}, // 17 characters
		{"aws_access_key_id", "AKIAiosfodnn7example", false},
		{"github_token", "ghp_" + r("a1B2", 9), true},
		{"github_token", "token ghs_" + r("Q", 36) + ".", true},
		{"github_token", "ghx_" + r("a", 36), false},
		{"github_token", "ghp_" + r("a", 35), false},
		{"github_token", "github_pat_11ABCDEFG0" + r("x", 40), true},
		{"google_api_key", "AIza" + r("S", 35), true},
		{"google_api_key", "AIza" + r("S", 34), false},
		{"slack_token", "xoxb-1234567890-abcdefghij", true},
		{"slack_token", "xoxz-1234567890-abcdefghij", false},
		{"private_key", "-----BEGIN RSA PRIVATE KEY-----\nMIIE...", true},
		{"private_key", "x\r\n-----BEGIN OPENSSH PRIVATE KEY-----\r\nb3Bl", true},
		{"private_key", "-----BEGIN PRIVATE KEY-----", true},
		{"private_key", "-----BEGIN PUBLIC KEY-----\nMIIB", false},
		{"private_key", "-----BEGIN CERTIFICATE-----\n... PRIVATE KEY-----", false},
		{"jwt", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz-xyz", true},
		{"jwt", "eyJhbGciOiJIUzI1NiJ9.notjson.c2lnbmF0dXJlLWJ5dGVz", false},
		{"jwt", "eyJhbGciOiJIUzI1NiJ9", false},
		{"payment_card", "card 4111 1111 1111 1111 exp 12/29", true},
		{"payment_card", "4111-1111-1111-1111", true},
		{"payment_card", "5555555555554444", true},
		{"payment_card", "amex 378282246310005.", true},
		{"payment_card", "4111 1111 1111 1112", false},  // fails Luhn
		{"payment_card", "41111111111111111111", false}, // 20 digits
		{"payment_card", "x4111111111111111", false},    // part of a word
		{"payment_card", "1111111111111117", false},     // not a card prefix
		{"payment_card", "order 12345, 4111111111111111", true},
		{"payment_card", "4111  1111 1111 1111", false}, // a double space ends the number
		{"payment_card", "", false},
	} {
		if got := builtins[tc.detector](tc.text); got != tc.want {
			t.Errorf("%s(%q) = %v, want %v", tc.detector, tc.text, got, tc.want)
		}
	}
}

func texts(s ...string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for _, t := range s {
			if !yield(t) {
				return
			}
		}
	}
}

func TestScan(t *testing.T) {
	sc, err := Compile(Settings{Rules: []RuleSettings{
		{Name: "cards", Detector: "payment_card", Action: ActionFlag},
		{Name: "aws", Detector: "aws_access_key_id"},
		{Name: "codename", Pattern: `(?i)\bproject\s+nightingale\b`, Action: ActionFlag},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		texts  []string
		denied string
		names  []string
	}{
		{[]string{"hello"}, "", nil},
		{[]string{"pay with 4111111111111111", "about Project  Nightingale"}, "", []string{"cards", "codename"}},
		{[]string{"AKIAIOSFODNN7EXAMPLE", "4111111111111111"}, "aws", []string{"aws"}}, // stops at the deny
		{[]string{"4111111111111111", "key AKIAIOSFODNN7EXAMPLE"}, "aws", []string{"cards", "aws"}},
	} {
		f := sc.Scan(texts(tc.texts...))
		denied, _ := sc.Denied(f)
		if denied != tc.denied || !slices.Equal(sc.Names(f), tc.names) {
			t.Errorf("%q: denied %q names %v, want %q %v", tc.texts, denied, sc.Names(f), tc.denied, tc.names)
		}
	}
}

func TestValidate(t *testing.T) {
	errs := Settings{Rules: []RuleSettings{
		{Name: "a", Detector: "jwt"},
		{Name: "a", Detector: "ssn", Action: "block"},
		{Name: "b", Detector: "jwt", Pattern: "x"},
		{Name: "c", Pattern: `(?<=x)y`},
		{Name: "D"},
	}}.Validate()
	testkit.WantErrors(t, errs, 7,
		`rules[1].name: "a" is used by another rule`,
		`rules[1].detector: "ssn" is not one of anthropic_api_key, aws_access_key_id,`,
		`rules[1].action: "block" is not one of deny, flag`,
		"rules[2]: set exactly one of detector and pattern",
		"rules[3].pattern: not an RE2 expression",
		"rules[4].name: must be",
		"rules[4]: set exactly one",
	)
}

// prompt is n bytes of ordinary chat text with digits and dashes (what the
// card and token scanners look at) and no secret.
func prompt(n int) string {
	const para = "Please summarise the quarterly report: revenue grew 12.5% to 4,200 units in Q3-2025, " +
		"see ticket OPS-1142 and the sk-learn notebook; call +1 555-0100 or email ops@example.com. "
	return strings.Repeat(para, n/len(para)+1)[:n]
}

func allBuiltins() *Scanner {
	var s Settings
	for _, id := range Detectors() {
		s.Rules = append(s.Rules, RuleSettings{Name: strings.ReplaceAll(id, "_", "-"), Detector: id})
	}
	sc, err := Compile(s)
	if err != nil {
		panic(err)
	}
	return sc
}

// BenchmarkScanBuiltins runs every built-in detector over a clean prompt
// (the whole text is read: nothing stops the scan early). Target: under
// 20 µs for 1 KiB, linear in the size.
func BenchmarkScanBuiltins(b *testing.B) {
	sc := allBuiltins()
	for _, size := range []struct {
		name string
		n    int
	}{{"1KiB", 1 << 10}, {"64KiB", 64 << 10}} {
		p := prompt(size.n)
		b.Run(size.name, func(b *testing.B) {
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			for b.Loop() {
				if sc.Scan(texts(p)) != 0 {
					b.Fatal("clean prompt flagged")
				}
			}
		})
	}
}
