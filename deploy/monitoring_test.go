// Package deploy holds the monitoring files operators deploy beside
// modelguard (Prometheus alerting rules, a Grafana dashboard); its tests
// check them against promtool and against the metrics the code registers.
package deploy

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/modelguard/modelguard/policy/metrics"
)

const (
	rulesFile     = "prometheus/modelguard-alerts.yml"
	rulesTestFile = "prometheus/modelguard-alerts_test.yml"
	dashboardFile = "grafana/modelguard-dashboard.json"
)

// TestAlertRules runs promtool's checks and the rules' unit tests.
func TestAlertRules(t *testing.T) {
	if _, err := exec.LookPath("promtool"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool not installed: .ci/run installs Debian's prometheus package")
		}
		t.Skip("promtool not installed (apt-get install prometheus)")
	}
	for _, args := range [][]string{{"check", "rules", rulesFile}, {"test", "rules", rulesTestFile}} {
		out, err := exec.Command("promtool", args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// registered returns the names of every metric modelguard registers.
func registered(t *testing.T) map[string]bool {
	t.Helper()
	rec := &recorder{names: map[string]bool{}}
	metrics.New(rec)
	if len(rec.names) < 10 {
		t.Fatalf("only %d metrics registered: %v", len(rec.names), rec.names)
	}
	return rec.names
}

// recorder is a prometheus.Registerer that keeps the names of what is
// registered: a Gather would leave out vectors that have no series yet.
type recorder struct{ names map[string]bool }

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		r.Register(c)
	}
}

func (r *recorder) Unregister(prometheus.Collector) bool { return false }

var (
	promString  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promBraces  = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promGroup   = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent   = regexp.MustCompile(`\b[A-Za-z_:][A-Za-z0-9_:]*`)
	promKeyword = []string{"and", "or", "unless", "offset", "bool", "by", "without"}
)

// metricNames are the metric names a PromQL expression reads: what is
// left once strings, label matchers, ranges and grouping labels are
// removed, and neither a function (followed by "(") nor a keyword.
func metricNames(expr string) []string {
	expr = promString.ReplaceAllString(expr, `""`)
	expr = promBraces.ReplaceAllString(expr, " ")
	expr = promGroup.ReplaceAllString(expr, " ")
	var out []string
	for _, loc := range promIdent.FindAllStringIndex(expr, -1) {
		name := expr[loc[0]:loc[1]]
		if rest := strings.TrimLeft(expr[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") || slices.Contains(promKeyword, name) {
			continue
		}
		out = append(out, name)
	}
	return out
}

func TestMetricNames(t *testing.T) {
	got := metricNames(`histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="b(c)",y=~"$i"}[$__rate_interval]))) / ignoring (z) b offset 10m and c > 2 * d`)
	if want := []string{"a_bucket", "b", "c", "d"}; !slices.Equal(got, want) {
		t.Fatalf("metricNames = %v, want %v", got, want)
	}
}

// known reports whether name is registered, or a histogram's series
// (_bucket, _sum, _count) of a registered name.
func known(names map[string]bool, name string) bool {
	if names[name] {
		return true
	}
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, s); ok && names[base] {
			return true
		}
	}
	return false
}

// TestQueriesUseRegisteredMetrics: every metric the dashboard's panels
// and variables and the alerting rules read is one the code registers, so
// a renamed metric fails here rather than as an empty panel or an alert
// that never fires.
func TestQueriesUseRegisteredMetrics(t *testing.T) {
	names := registered(t)
	var exprs []string

	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	labelValues := regexp.MustCompile(`label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)`)
	for _, v := range dash.Templating.List {
		if m := labelValues.FindStringSubmatch(v.Definition); m != nil {
			exprs = append(exprs, m[1])
		}
	}

	raw, err = os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	if len(exprs) < 20 {
		t.Fatalf("only %d queries found", len(exprs))
	}
	for _, e := range exprs {
		ms := metricNames(e)
		if len(ms) == 0 {
			t.Errorf("no metric in %q", e)
		}
		for _, m := range ms {
			if !known(names, m) {
				t.Errorf("%q reads %s, which modelguard does not register", e, m)
			}
		}
	}
}
