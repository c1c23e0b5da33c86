// Package helm tests the modelguard chart with Helm's own Go packages
// (helm.sh/helm/v3): lint, then render and check the objects. It is a
// module of its own so that Helm and the Kubernetes libraries it brings
// stay out of modelguard's go.mod, its builds and its vulnerability scan;
// "make test" runs it.
package helm

import (
	"bytes"
	"errors"
	"io"
	"log"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
)

const chartDir = "modelguard"

// TestMain quiets the loader's standard-logger note that files/policy is a
// symbolic link (to examples/policy, so the chart ships the example
// policy without a copy to keep in step).
func TestMain(m *testing.M) {
	log.SetOutput(io.Discard)
	os.Exit(m.Run())
}

// issuerPEM stands for the JWT issuer's key the default configuration reads.
const issuerPEM = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"

func TestLint(t *testing.T) {
	for name, values := range map[string]map[string]any{
		"defaults": nil,
		"everything on": {
			"autoscaling":    map[string]any{"enabled": true},
			"serviceMonitor": map[string]any{"enabled": true},
			"secret":         map[string]any{"files": map[string]any{"issuer.pem": issuerPEM}},
		},
	} {
		t.Run(name, func(t *testing.T) {
			l := lint.All(chartDir, values, "models", true)
			for _, m := range l.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("lint: %s", m)
				}
			}
		})
	}
}

// object is one rendered Kubernetes object.
type object map[string]any

// render renders the chart with values and returns its objects by kind
// and the rendered NOTES.txt.
func render(t *testing.T, values map[string]any) (map[string][]object, string) {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := chartutil.ToRenderValues(ch, values, chartutil.ReleaseOptions{Name: "mg", Namespace: "models", IsInstall: true}, chartutil.DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	files, err := engine.Render(ch, vals)
	if err != nil {
		t.Fatal(err)
	}
	objs := map[string][]object{}
	var notes string
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if strings.HasSuffix(name, "NOTES.txt") {
			notes = files[name]
			continue
		}
		dec := yaml.NewDecoder(strings.NewReader(files[name]))
		for {
			// A generic map: decoding into object would make the nested
			// mappings objects too, which get does not walk.
			var m map[string]any
			err := dec.Decode(&m)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v\n%s", name, err, files[name])
			}
			if o := object(m); o != nil {
				objs[o.str("kind")] = append(objs[o.str("kind")], o)
			}
		}
	}
	return objs, notes
}

// get walks a path of map keys and list indexes.
func (o object) get(path ...any) any {
	var cur any = map[string]any(o)
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := cur.(map[string]any)
			if !ok {
				return nil
			}
			cur = m[k]
		case int:
			l, ok := cur.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			cur = l[k]
		}
	}
	return cur
}

func (o object) str(path ...any) string {
	s, _ := o.get(path...).(string)
	return s
}

func one(t *testing.T, objs map[string][]object, kind string) object {
	t.Helper()
	if len(objs[kind]) != 1 {
		t.Fatalf("%d objects of kind %s, want 1", len(objs[kind]), kind)
	}
	return objs[kind][0]
}

func TestRenderDefaults(t *testing.T) {
	objs, notes := render(t, nil)
	dep := one(t, objs, "Deployment")
	pod := object(dep.get("spec", "template", "spec").(map[string]any))
	c := object(pod.get("containers", 0).(map[string]any))

	// Probes speak grpc.health.v1 on the ext_authz port.
	if c.get("readinessProbe", "grpc", "port") != 9191 || c.str("readinessProbe", "grpc", "service") != "envoy.service.auth.v3.Authorization" {
		t.Errorf("readiness probe %v", c.get("readinessProbe"))
	}
	if c.get("livenessProbe", "grpc", "port") != 9191 {
		t.Errorf("liveness probe %v", c.get("livenessProbe"))
	}
	// Non-root, read-only, no privileges.
	if pod.get("securityContext", "runAsNonRoot") != true || pod.get("securityContext", "runAsUser") != 65532 {
		t.Errorf("pod securityContext %v", pod.get("securityContext"))
	}
	if c.get("securityContext", "allowPrivilegeEscalation") != false || c.get("securityContext", "readOnlyRootFilesystem") != true ||
		!slices.Equal(toStrings(c.get("securityContext", "capabilities", "drop")), []string{"ALL"}) {
		t.Errorf("container securityContext %v", c.get("securityContext"))
	}
	// Whole-directory mounts (a subPath is never updated: no hot reload),
	// each from the object the chart renders.
	mounts := map[string]string{}
	for _, m := range c.get("volumeMounts").([]any) {
		m := object(m.(map[string]any))
		if m.get("subPath") != nil {
			t.Errorf("mount %s uses subPath", m.str("name"))
		}
		mounts[m.str("name")] = m.str("mountPath")
	}
	if mounts["config"] != "/etc/modelguard" || mounts["policies"] != "/etc/modelguard-policies" || mounts["keys"] != "/etc/modelguard-keys" {
		t.Errorf("mounts %v", mounts)
	}
	if c.str("args", 2) != "/etc/modelguard/config.yaml" {
		t.Errorf("args %v", c.get("args"))
	}
	volumes := map[string]string{}
	for _, v := range pod.get("volumes").([]any) {
		v := object(v.(map[string]any))
		volumes[v.str("name")] = v.str("configMap", "name") + v.str("secret", "secretName")
	}
	if volumes["config"] != "mg-modelguard-config" || volumes["policies"] != "mg-modelguard-policies" || volumes["keys"] != "mg-modelguard-keys" {
		t.Errorf("volumes %v", volumes)
	}

	// The configuration is the repository's Kubernetes example, the one
	// envoy/istio/modelguard.yaml also ships; the policies are examples/policy.
	var cms = map[string]object{}
	for _, cm := range objs["ConfigMap"] {
		cms[cm.str("metadata", "name")] = cm
	}
	want, err := os.ReadFile(filepath.Join(chartDir, "files", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cms["mg-modelguard-config"].str("data", "config.yaml"); got != string(want) {
		t.Errorf("config.yaml in the ConfigMap:\n%s\nwant files/config.yaml:\n%s", got, want)
	}
	if istio := istioConfig(t); istio != string(want) {
		t.Errorf("files/config.yaml and the ConfigMap of envoy/istio/modelguard.yaml differ:\n%s\n---\n%s", want, istio)
	}
	for _, name := range []string{"authz.rego", "authz_test.rego", "data.yaml"} {
		want, err := os.ReadFile(filepath.Join("..", "..", "examples", "policy", name))
		if err != nil {
			t.Fatal(err)
		}
		if got := cms["mg-modelguard-policies"].str("data", name); got != string(want) {
			t.Errorf("policy %s in the ConfigMap differs from examples/policy", name)
		}
	}
	if got := one(t, objs, "Secret").str("stringData", "api-keys.yaml"); got != "keys: []\n" {
		t.Errorf("api-keys.yaml in the Secret: %q", got)
	}

	svc := one(t, objs, "Service")
	if svc.str("spec", "ports", 0, "appProtocol") != "grpc" || svc.get("spec", "ports", 0, "port") != 9191 {
		t.Errorf("service ports %v", svc.get("spec", "ports"))
	}
	if one(t, objs, "PodDisruptionBudget").get("spec", "minAvailable") != 1 {
		t.Error("PodDisruptionBudget minAvailable")
	}
	if len(objs["HorizontalPodAutoscaler"])+len(objs["ServiceMonitor"]) != 0 {
		t.Error("the optional HPA or ServiceMonitor rendered by default")
	}
	for _, want := range []string{"envoyExtAuthzGrpc:", "service: mg-modelguard.models.svc.cluster.local", "failOpen: false", "packAsBytes: true", "set secret.files.issuer.pem"} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES.txt lacks %q:\n%s", want, notes)
		}
	}
}

func TestRenderOptions(t *testing.T) {
	objs, notes := render(t, map[string]any{
		"autoscaling":    map[string]any{"enabled": true, "maxReplicas": 6},
		"serviceMonitor": map[string]any{"enabled": true, "labels": map[string]any{"release": "prom"}},
		"secret":         map[string]any{"existingSecret": "my-keys"},
		"config":         "authorization:\n  policy_dir: /etc/modelguard-policies\n",
		"policies":       map[string]any{"mine.rego": "package modelguard.authz\n\nallow := false\n"},
	})
	if one(t, objs, "HorizontalPodAutoscaler").get("spec", "maxReplicas") != 6 {
		t.Error("HPA maxReplicas")
	}
	if one(t, objs, "Deployment").get("spec", "replicas") != nil {
		t.Error("replicas set alongside the HPA")
	}
	sm := one(t, objs, "ServiceMonitor")
	if sm.str("metadata", "labels", "release") != "prom" || sm.str("spec", "endpoints", 0, "port") != "admin" {
		t.Errorf("ServiceMonitor %v", sm)
	}
	if len(objs["Secret"]) != 0 {
		t.Error("a Secret rendered with existingSecret")
	}
	for _, cm := range objs["ConfigMap"] {
		switch cm.str("metadata", "name") {
		case "mg-modelguard-config":
			if cm.str("data", "config.yaml") != "authorization:\n  policy_dir: /etc/modelguard-policies\n" {
				t.Errorf("config %q", cm.str("data", "config.yaml"))
			}
		case "mg-modelguard-policies":
			if data := cm.get("data").(map[string]any); len(data) != 1 || data["mine.rego"] == nil {
				t.Errorf("policies %v", data)
			}
		}
	}
	if strings.Contains(notes, "issuer.pem") {
		t.Error("NOTES warn about issuer.pem with a configuration of one's own")
	}
}

// istioConfig is config.yaml of the ConfigMap in envoy/istio/modelguard.yaml.
func istioConfig(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "envoy", "istio", "modelguard.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("no ConfigMap with config.yaml: %v", err)
		}
		o := object(m)
		if o.str("kind") == "ConfigMap" && o.str("data", "config.yaml") != "" {
			return o.str("data", "config.yaml")
		}
	}
}

func toStrings(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, s := range l {
		str, _ := s.(string)
		out = append(out, str)
	}
	return out
}
