package policy_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkDecideAbuse is the whole decision for a bearer API key with
// each abuse step on its own, for the cost of each as a ratio to
// BenchmarkDecideAPIKey from the same run: address lists (a 100,000-prefix
// deny list and an allow list), the lockout (local store: a lookup per
// request), and every built-in DLP detector over the chat prompt.
func BenchmarkDecideAbuse(b *testing.B) {
	lists := func(dir string) string {
		var feed strings.Builder
		for i := range 100_000 {
			fmt.Fprintf(&feed, "%d.%d.%d.0/24\n", 11+i>>16, i>>8&0xff, i&0xff)
		}
		os.WriteFile(filepath.Join(dir, "threats.txt"), []byte(feed.String()), 0o644)
		os.WriteFile(filepath.Join(dir, "corp.txt"), []byte("10.0.0.0/8\n"), 0o644)
		return filepath.Join(dir, "threats.txt")
	}
	var rules strings.Builder
	for _, id := range []string{"openai_api_key", "anthropic_api_key", "aws_access_key_id", "github_token", "google_api_key", "slack_token", "private_key", "jwt", "payment_card"} {
		fmt.Fprintf(&rules, "    - {name: %s, detector: %s}\n", strings.ReplaceAll(id, "_", "-"), id)
	}
	dir := b.TempDir()
	threats := lists(dir)
	for _, tc := range []struct{ name, yaml string }{
		{"none", ""},
		{"ip_lists", fmt.Sprintf("ip_lists:\n  lists:\n    - {name: threats, file: %s, action: deny}\n    - {name: corp, file: %s, action: allow}\n", threats, filepath.Join(dir, "corp.txt"))},
		{"lockout", "lockout: {max_failures: 10}\n"},
		{"dlp", "dlp:\n  rules:\n" + rules.String()},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := newBenchSetupJWT(b, "", "", tc.yaml)
			benchDecide(b, s.engine, benchRequest("Bearer "+s.key))
		})
	}
}
