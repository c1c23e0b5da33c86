package dlp

import (
	"strings"
)

// The built-in detectors find a literal prefix with strings.Index (which
// the Go runtime vectorises) and then check the run of characters after
// it. Go's regexp (RE2, no multi-pattern or literal-set acceleration)
// takes several µs per KiB per pattern, so nine patterns would miss the
// 20 µs per KiB budget; these take about as long as reading the text once
// per prefix. Operator patterns use regexp.

// detector reports whether s holds what it looks for.
type detector func(s string) bool

// builtins are the detectors by the id rules name them with.
var builtins = map[string]detector{
	"openai_api_key":    openAIKey,
	"anthropic_api_key": prefixed(tokenChars, 20, 0, "sk-ant-"),
	"aws_access_key_id": awsKeyID,
	"github_token":      githubToken,
	"google_api_key":    prefixed(tokenChars, 35, 35, "AIza"),
	"slack_token":       prefixed(slackChars, 10, 0, "xoxb-", "xoxp-", "xoxa-", "xoxo-", "xoxs-", "xoxr-"),
	"private_key":       privateKey,
	"jwt":               jwtToken,
	"payment_card":      paymentCard,
}

func tokenChars(c byte) bool { // base64url and the usual key alphabets
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

func alnum(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' }

func upperAlnum(c byte) bool { return 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' }

func slackChars(c byte) bool { return alnum(c) || c == '-' }

// run is the length of the run of class characters at the start of s.
func run(s string, class func(byte) bool) int {
	n := 0
	for n < len(s) && class(s[n]) {
		n++
	}
	return n
}

// startsToken reports whether s[i] begins a token: it is the start or
// follows a character no token holds (so "task-..." is not "sk-...").
func startsToken(s string, i int) bool { return i == 0 || !tokenChars(s[i-1]) }

// each calls f with the index after every occurrence of prefix in s that
// starts a token, until f returns true.
func each(s, prefix string, f func(after int) bool) bool {
	for off := 0; ; {
		i := strings.Index(s[off:], prefix)
		if i < 0 {
			return false
		}
		i += off
		if startsToken(s, i) && f(i+len(prefix)) {
			return true
		}
		off = i + 1
	}
}

// prefixed finds any of prefixes followed by a run of class characters of
// at least minRun (and, when exact is set, exactly exact) characters.
func prefixed(class func(byte) bool, minRun, exact int, prefixes ...string) detector {
	return func(s string) bool {
		for _, p := range prefixes {
			if each(s, p, func(after int) bool {
				n := run(s[after:], class)
				return n >= minRun && (exact == 0 || n == exact)
			}) {
				return true
			}
		}
		return false
	}
}

// openAIKey: sk- (legacy, 48 characters), sk-proj-, sk-svcacct-, sk-admin-
// followed by a long run; Anthropic's sk-ant- has its own detector.
func openAIKey(s string) bool {
	return each(s, "sk-", func(after int) bool {
		return !strings.HasPrefix(s[after:], "ant-") && run(s[after:], tokenChars) >= 32
	})
}

// awsKeyID: AKIA (long-term) or ASIA (temporary) and 16 upper-case
// letters or digits, as a whole word.
func awsKeyID(s string) bool {
	for _, p := range [...]string{"AKIA", "ASIA"} {
		if each(s, p, func(after int) bool {
			n := run(s[after:], upperAlnum)
			return n == 16 && (after+n == len(s) || !alnum(s[after+n]))
		}) {
			return true
		}
	}
	return false
}

// githubToken: classic tokens (ghp_, gho_, ghu_, ghs_, ghr_ and 36
// characters) and fine-grained ones (github_pat_ and 22 or more).
func githubToken(s string) bool {
	return each(s, "gh", func(after int) bool {
		r := s[after:]
		return len(r) > 2 && strings.IndexByte("pousr", r[0]) >= 0 && r[1] == '_' && run(r[2:], alnum) >= 36
	}) || each(s, "github_pat_", func(after int) bool { return run(s[after:], tokenChars) >= 22 })
}

// privateKey: a PEM private key block header (RSA, EC, DSA, OPENSSH,
// ENCRYPTED or PKCS #8 "PRIVATE KEY").
func privateKey(s string) bool {
	return each(s, "-----BEGIN ", func(after int) bool {
		line := s[after:]
		if i := strings.IndexByte(line, '\n'); i >= 0 {
			line = line[:i]
		}
		return len(line) <= 40 && strings.HasSuffix(strings.TrimRight(line, "\r"), "PRIVATE KEY-----")
	})
}

// jwtToken: three base64url segments whose first two are JSON objects
// ("eyJ" is the encoding of `{"`).
func jwtToken(s string) bool {
	return each(s, "eyJ", func(after int) bool {
		r := s[after:]
		n := run(r, b64url)
		if n < 8 || len(r) <= n+4 || r[n] != '.' || !strings.HasPrefix(r[n+1:], "eyJ") {
			return false
		}
		r = r[n+4:]
		n = run(r, b64url)
		return n >= 8 && len(r) > n && r[n] == '.' && run(r[n+1:], b64url) >= 16
	})
}

func b64url(c byte) bool { return alnum(c) || c == '_' || c == '-' }

// paymentCard finds 13 to 19 digits, in groups separated by single spaces
// or dashes, that start as card numbers do (2 to 6: Mastercard 2-series,
// Amex/Diners/JCB, Visa, Mastercard, Discover/UnionPay) and pass the Luhn
// check, and are not part of a longer number.
func paymentCard(s string) bool {
	var digits [19]byte
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) || i > 0 && alnum(s[i-1]) {
			continue
		}
		n, j := 0, i
	number:
		for ; j < len(s); j++ {
			switch c := s[j]; {
			case isDigit(c):
				if n == len(digits) {
					n++ // too long to be a card
					break number
				}
				digits[n] = c - '0'
				n++
			case (c == ' ' || c == '-') && j+1 < len(s) && isDigit(s[j+1]) && isDigit(s[j-1]):
			default:
				break number
			}
		}
		if n >= 13 && n <= 19 && (j == len(s) || !alnum(s[j])) && digits[0] >= 2 && digits[0] <= 6 && luhn(digits[:n]) {
			return true
		}
		// Skip the rest of this number (and, when it was too long, its
		// remaining digits).
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		i = j
	}
	return false
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// luhn reports whether the digits pass the Luhn (mod 10) check.
func luhn(d []byte) bool {
	sum := 0
	for i := range d {
		v := int(d[len(d)-1-i])
		if i%2 == 1 {
			v *= 2
			if v > 9 {
				v -= 9
			}
		}
		sum += v
	}
	return sum%10 == 0
}
