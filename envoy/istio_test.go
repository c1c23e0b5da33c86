package envoy_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/modelguard/modelguard/policy/config"
)

// A light structural check of envoy/istio: no Istio or Kubernetes
// dependencies, only the fields we rely on, with exact names.

const (
	meshIOPFile   = "istio/mesh-istiooperator.yaml"
	meshHelmFile  = "istio/mesh-helm-values.yaml"
	authzFile     = "istio/authorization-policy.yaml"
	modelguardK8s = "istio/modelguard.yaml"
	providerName  = "modelguard"
)

// yamlDocs decodes every document of a multi-document YAML file, both as a
// generic tree (for exact key names) and as raw nodes (for typed decoding).
func yamlDocs(t *testing.T, name string) ([]map[string]any, []*yaml.Node) {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(readFile(t, name)))
	var trees []map[string]any
	var nodes []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var m map[string]any
		if err := n.Decode(&m); err != nil {
			t.Fatalf("%s document %d: %v", name, len(trees), err)
		}
		if m == nil {
			continue
		}
		trees = append(trees, m)
		nodes = append(nodes, &n)
	}
	return trees, nodes
}

func kinds(docs []map[string]any) []string {
	var ks []string
	for _, d := range docs {
		k, _ := d["kind"].(string)
		ks = append(ks, k)
	}
	return ks
}

func TestIstioFilesKinds(t *testing.T) {
	want := map[string][]string{
		meshIOPFile:   {"IstioOperator"},
		meshHelmFile:  {""}, // Helm values have no kind
		authzFile:     {"AuthorizationPolicy", "AuthorizationPolicy"},
		modelguardK8s: {"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget"},
	}
	files, err := filepath.Glob("istio/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if _, ok := want[filepath.ToSlash(f)]; !ok {
			t.Errorf("%s is not covered by this test", f)
		}
	}
	for file, wantKinds := range want {
		docs, _ := yamlDocs(t, file)
		if got := kinds(docs); !slices.Equal(got, wantKinds) {
			t.Errorf("%s kinds %q, want %q", file, got, wantKinds)
		}
		for i, d := range docs {
			if wantKinds[i] == "" {
				continue
			}
			if d["apiVersion"] == nil {
				t.Errorf("%s document %d: no apiVersion", file, i)
			}
			md, _ := d["metadata"].(map[string]any)
			if md["name"] == nil {
				t.Errorf("%s document %d: no metadata.name", file, i)
			}
			if d["kind"] != "Namespace" && md["namespace"] == nil {
				t.Errorf("%s document %d: no metadata.namespace", file, i)
			}
		}
	}
}

// dive is dig without a test failure: ok is false when the path is absent.
func dive(v any, path ...string) (any, bool) {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

// meshProvider returns the envoyExtAuthzGrpc map of the modelguard extension
// provider in the list at path.
func meshProvider(t *testing.T, doc map[string]any, path ...string) map[string]any {
	t.Helper()
	list, ok := dive(doc, path...)
	providers, _ := list.([]any)
	if !ok || len(providers) == 0 {
		t.Fatalf("no %s list", strings.Join(path, "."))
	}
	for _, e := range providers {
		m, _ := e.(map[string]any)
		if m["name"] != providerName {
			continue
		}
		g, ok := m["envoyExtAuthzGrpc"].(map[string]any)
		if !ok {
			t.Fatalf("provider %q has no envoyExtAuthzGrpc map: %v", providerName, m)
		}
		return g
	}
	t.Fatalf("no extension provider named %q", providerName)
	return nil
}

// TestIstioProvider checks the extension provider in both install formats
// against the field names of Istio's API and against envoy.yaml's ext_authz.
func TestIstioProvider(t *testing.T) {
	b, err := loadBootstrap(readFile(t, envoyFile))
	if err != nil {
		t.Fatal(err)
	}
	_, envoyAuthz := shippedExtAuthz(t, b)
	envoyBody := envoyAuthz.GetWithRequestBody()

	// Istio's envoyExtAuthzGrpc fields; includeRequestHeadersInCheck belongs
	// to the HTTP provider only.
	allowed := map[string]bool{"service": true, "port": true, "timeout": true, "failOpen": true,
		"statusOnError": true, "clearRouteCache": true, "includeRequestBodyInCheck": true}
	allowedBody := map[string]bool{"maxRequestBytes": true, "allowPartialMessage": true, "packAsBytes": true}

	iop, _ := yamlDocs(t, meshIOPFile)
	helm, _ := yamlDocs(t, meshHelmFile)
	sources := []struct {
		file string
		doc  map[string]any
		path []string
	}{
		{meshIOPFile, iop[0], []string{"spec", "meshConfig", "extensionProviders"}},
		{meshHelmFile, helm[0], []string{"meshConfig", "extensionProviders"}},
	}
	for _, src := range sources {
		t.Run(src.file, func(t *testing.T) {
			g := meshProvider(t, src.doc, src.path...)
			for k := range g {
				if !allowed[k] {
					t.Errorf("envoyExtAuthzGrpc.%s is not an Istio field", k)
				}
			}
			body, _ := g["includeRequestBodyInCheck"].(map[string]any)
			for k := range body {
				if !allowedBody[k] {
					t.Errorf("includeRequestBodyInCheck.%s is not an Istio field", k)
				}
			}

			// Exact values and YAML types (statusOnError is a string in Istio).
			want := map[string]any{
				"service":       "modelguard.modelguard.svc.cluster.local",
				"port":          9191,
				"timeout":       "0.25s",
				"failOpen":      false,
				"statusOnError": "503",
			}
			for k, w := range want {
				if g[k] != w {
					t.Errorf("envoyExtAuthzGrpc.%s = %#v, want %#v", k, g[k], w)
				}
			}
			wantBody := map[string]any{"maxRequestBytes": 1048576, "allowPartialMessage": true, "packAsBytes": true}
			for k, w := range wantBody {
				if body[k] != w {
					t.Errorf("includeRequestBodyInCheck.%s = %#v, want %#v", k, body[k], w)
				}
			}

			// The same contract as the plain Envoy bootstrap.
			d, err := time.ParseDuration(g["timeout"].(string))
			if err != nil || d != envoyAuthz.GetGrpcService().GetTimeout().AsDuration() {
				t.Errorf("timeout %v differs from envoy.yaml's %v", g["timeout"], envoyAuthz.GetGrpcService().GetTimeout().AsDuration())
			}
			if g["failOpen"] != envoyAuthz.GetFailureModeAllow() {
				t.Errorf("failOpen %v differs from envoy.yaml's failure_mode_allow", g["failOpen"])
			}
			if g["statusOnError"] != strconv.Itoa(int(envoyAuthz.GetStatusOnError().GetCode())) {
				t.Errorf("statusOnError %v differs from envoy.yaml's status_on_error", g["statusOnError"])
			}
			if body["maxRequestBytes"] != int(envoyBody.GetMaxRequestBytes()) ||
				body["allowPartialMessage"] != envoyBody.GetAllowPartialMessage() ||
				body["packAsBytes"] != envoyBody.GetPackAsBytes() {
				t.Errorf("includeRequestBodyInCheck %v differs from envoy.yaml's with_request_body %v", body, envoyBody)
			}
		})
	}
}

type authorizationPolicy struct {
	APIVersion string `yaml:"apiVersion"`
	Spec       struct {
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Action   string `yaml:"action"`
		Provider struct {
			Name string `yaml:"name"`
		} `yaml:"provider"`
		Rules []struct {
			To []struct {
				Operation struct {
					Paths    []string `yaml:"paths"`
					NotPaths []string `yaml:"notPaths"`
				} `yaml:"operation"`
			} `yaml:"to"`
		} `yaml:"rules"`
	} `yaml:"spec"`
}

func (p authorizationPolicy) paths(not bool) []string {
	var out []string
	for _, r := range p.Spec.Rules {
		for _, to := range r.To {
			if not {
				out = append(out, to.Operation.NotPaths...)
			} else {
				out = append(out, to.Operation.Paths...)
			}
		}
	}
	return out
}

func TestAuthorizationPolicy(t *testing.T) {
	_, nodes := yamlDocs(t, authzFile)
	var custom, deny authorizationPolicy
	if err := nodes[0].Decode(&custom); err != nil {
		t.Fatal(err)
	}
	if err := nodes[1].Decode(&deny); err != nil {
		t.Fatal(err)
	}
	wantSelector := map[string]string{"app": "model-server"}
	wantPaths := []string{"/v1/*", "/v2/*"}

	if custom.APIVersion != "security.istio.io/v1" || custom.Spec.Action != "CUSTOM" || custom.Spec.Provider.Name != providerName {
		t.Errorf("first policy: apiVersion %q action %q provider %q, want security.istio.io/v1 CUSTOM %q",
			custom.APIVersion, custom.Spec.Action, custom.Spec.Provider.Name, providerName)
	}
	if got := custom.paths(false); !slices.Equal(got, wantPaths) {
		t.Errorf("CUSTOM paths %q, want %q", got, wantPaths)
	}
	// The DENY policy must cover exactly what CUSTOM leaves unchecked.
	if deny.APIVersion != "security.istio.io/v1" || deny.Spec.Action != "DENY" || deny.Spec.Provider.Name != "" {
		t.Errorf("second policy: apiVersion %q action %q provider %q, want security.istio.io/v1 DENY without provider",
			deny.APIVersion, deny.Spec.Action, deny.Spec.Provider.Name)
	}
	if got := deny.paths(true); !slices.Equal(got, wantPaths) || len(deny.paths(false)) != 0 {
		t.Errorf("DENY notPaths %q, want %q and no paths", got, wantPaths)
	}
	for _, p := range []authorizationPolicy{custom, deny} {
		if !equalMaps(p.Spec.Selector.MatchLabels, wantSelector) {
			t.Errorf("selector %v, want %v", p.Spec.Selector.MatchLabels, wantSelector)
		}
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || v != w {
			return false
		}
	}
	return true
}

type objectMeta struct {
	Name      string            `yaml:"name"`
	Namespace string            `yaml:"namespace"`
	Labels    map[string]string `yaml:"labels"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type deployment struct {
	Spec struct {
		Replicas int `yaml:"replicas"`
		Template struct {
			Metadata objectMeta `yaml:"metadata"`
			Spec     struct {
				SecurityContext struct {
					RunAsNonRoot *bool `yaml:"runAsNonRoot"`
				} `yaml:"securityContext"`
				Containers []struct {
					Image string   `yaml:"image"`
					Args  []string `yaml:"args"`
					Ports []struct {
						Name          string `yaml:"name"`
						ContainerPort int    `yaml:"containerPort"`
					} `yaml:"ports"`
					ReadinessProbe  probe `yaml:"readinessProbe"`
					LivenessProbe   probe `yaml:"livenessProbe"`
					SecurityContext struct {
						RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
						ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
						AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
					} `yaml:"securityContext"`
					VolumeMounts []struct {
						Name      string `yaml:"name"`
						MountPath string `yaml:"mountPath"`
						SubPath   string `yaml:"subPath"`
					} `yaml:"volumeMounts"`
				} `yaml:"containers"`
				Volumes []struct {
					Name      string `yaml:"name"`
					ConfigMap *struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
					Secret *struct {
						SecretName string `yaml:"secretName"`
					} `yaml:"secret"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type service struct {
	Metadata objectMeta `yaml:"metadata"`
	Spec     struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort any    `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type configMap struct {
	Metadata objectMeta        `yaml:"metadata"`
	Data     map[string]string `yaml:"data"`
}

func isTrue(b *bool) bool { return b != nil && *b }

type volume struct{ configMap, secret string }

// parseMountedConfig runs the real configuration loader on the ConfigMap's
// config.yaml. The loader checks that the files it names exist, so the
// mounted volumes are recreated under a temporary root, the Secret holding
// the files envoy/README.md tells users to put in it, and the config's /etc/
// paths are moved there. It returns the config and that root.
func parseMountedConfig(t *testing.T, text string, mounts map[string]volume) (*config.Config, string) {
	t.Helper()
	root := t.TempDir()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	secretFiles := map[string][]byte{
		"issuer.pem":    pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
		"api-keys.yaml": []byte("keys: []\n"),
	}
	for mp, v := range mounts {
		dir := filepath.Join(root, filepath.FromSlash(mp))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if v.secret == "" {
			continue
		}
		for name, data := range secretFiles {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	moved := strings.ReplaceAll(text, " /etc/", " "+filepath.ToSlash(root)+"/etc/")
	cfg, err := config.Parse([]byte(moved), "config.yaml", root)
	if err != nil {
		t.Fatalf("the ConfigMap's config.yaml is refused by policy/config:\n%v", err)
	}
	return cfg, filepath.ToSlash(root)
}

// TestModelguardDeployment checks modelguard's own manifests against each
// other, against the mesh provider, and its config.yaml against
// policy/config, strictly.
func TestModelguardDeployment(t *testing.T) {
	trees, nodes := yamlDocs(t, modelguardK8s)
	var dep deployment
	var svc service
	configMaps := make(map[string]configMap)
	for i, tree := range trees {
		var err error
		switch tree["kind"] {
		case "Deployment":
			err = nodes[i].Decode(&dep)
		case "Service":
			err = nodes[i].Decode(&svc)
		case "ConfigMap":
			var cm configMap
			err = nodes[i].Decode(&cm)
			configMaps[cm.Metadata.Name] = cm
		}
		if err != nil {
			t.Fatalf("%s document %d: %v", modelguardK8s, i, err)
		}
	}
	pod := dep.Spec.Template
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]

	if c.Image != "modelguard:latest" {
		t.Errorf("image %q", c.Image)
	}
	wantArgs := []string{"serve", "-config", "/etc/modelguard/config.yaml"}
	if !slices.Equal(c.Args, wantArgs) {
		t.Errorf("args %q, want %q", c.Args, wantArgs)
	}
	ports := make(map[string]int)
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["grpc"] != 9191 || ports["admin"] != 9192 {
		t.Errorf("container ports %v, want grpc 9191 and admin 9192", ports)
	}
	resolve := func(port any) int {
		switch p := port.(type) {
		case int:
			return p
		case string:
			return ports[p]
		}
		return 0
	}
	for _, pr := range []struct {
		name  string
		probe probe
		path  string
	}{{"readinessProbe", c.ReadinessProbe, "/readyz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}} {
		if g := pr.probe.HTTPGet; g == nil || g.Path != pr.path || resolve(g.Port) != 9192 {
			t.Errorf("%s %+v, want httpGet %s on 9192", pr.name, g, pr.path)
		}
	}
	if !isTrue(pod.Spec.SecurityContext.RunAsNonRoot) && !isTrue(c.SecurityContext.RunAsNonRoot) {
		t.Error("runAsNonRoot is not set")
	}
	if !isTrue(c.SecurityContext.ReadOnlyRootFilesystem) {
		t.Error("readOnlyRootFilesystem is not set")
	}
	if c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation must be false")
	}

	// Volumes: config and policies from ConfigMaps, keys from a Secret, each
	// mounted whole (a subPath mount never sees updates: no hot reload).
	volumes := make(map[string]volume)
	for _, v := range pod.Spec.Volumes {
		switch {
		case v.ConfigMap != nil:
			volumes[v.Name] = volume{configMap: v.ConfigMap.Name}
		case v.Secret != nil:
			volumes[v.Name] = volume{secret: v.Secret.SecretName}
		}
	}
	mounts := make(map[string]volume) // by mount path
	for _, m := range c.VolumeMounts {
		if m.SubPath != "" {
			t.Errorf("volumeMount %s uses subPath: it would never be updated", m.Name)
		}
		v, ok := volumes[m.Name]
		if !ok {
			t.Errorf("volumeMount %s: no ConfigMap or Secret volume of that name", m.Name)
		}
		mounts[m.MountPath] = v
	}
	configPath := wantArgs[2]
	cv := mounts[path.Dir(configPath)]
	cm, ok := configMaps[cv.configMap]
	if !ok || cm.Data[path.Base(configPath)] == "" {
		t.Fatalf("%s: want a ConfigMap from this file mounted at %s with key %s", configPath, path.Dir(configPath), path.Base(configPath))
	}

	cfg, root := parseMountedConfig(t, cm.Data[path.Base(configPath)], mounts)
	// Reachable by the sidecar and the kubelet, on the container's ports.
	for _, a := range []struct{ name, addr, port string }{
		{"server.grpc_address", cfg.Server.GRPCAddress, "grpc"},
		{"server.admin_address", cfg.Server.AdminAddress, "admin"},
	} {
		host, port, err := net.SplitHostPort(a.addr)
		if err != nil || (host != "" && host != "0.0.0.0" && host != "::") || port != strconv.Itoa(ports[a.port]) {
			t.Errorf("%s %q: want all interfaces on the %s port %d", a.name, a.addr, a.port, ports[a.port])
		}
	}
	// Every file the config names lies in a mounted volume of the right kind.
	under := func(what, p string, wantSecret bool) {
		p = strings.TrimPrefix(p, root)
		for mp, v := range mounts {
			if p == mp || strings.HasPrefix(p, mp+"/") {
				if wantSecret && v.secret == "" {
					t.Errorf("%s %s is in ConfigMap %s; keys belong in a Secret", what, p, v.configMap)
				}
				if !wantSecret && v.configMap == "" {
					t.Errorf("%s %s: want a ConfigMap volume", what, p)
				}
				return
			}
		}
		t.Errorf("%s %s is not in any mounted volume", what, p)
	}
	under("authorization.policy_dir", cfg.Authorization.PolicyDir, false)
	if cfg.Authentication.APIKeys.File == "" {
		t.Error("authentication.api_keys.file is empty")
	} else {
		under("authentication.api_keys.file", cfg.Authentication.APIKeys.File, true)
	}
	for _, is := range cfg.Authentication.JWT.Issuers {
		for _, k := range is.Keys {
			if k.PEMFile != "" {
				under("jwt key pem_file", k.PEMFile, true)
			}
			if k.SecretFile != "" {
				under("jwt key secret_file", k.SecretFile, true)
			}
		}
	}

	// The Service the mesh provider names, reaching the gRPC port.
	iop, _ := yamlDocs(t, meshIOPFile)
	provider := meshProvider(t, iop[0], "spec", "meshConfig", "extensionProviders")
	if want := svc.Metadata.Name + "." + svc.Metadata.Namespace + ".svc.cluster.local"; provider["service"] != want {
		t.Errorf("provider service %v, Service is %s", provider["service"], want)
	}
	found := false
	for _, p := range svc.Spec.Ports {
		if p.Port == provider["port"] {
			found = true
			if resolve(p.TargetPort) != 9191 {
				t.Errorf("Service port %d targets %v, want the grpc port 9191", p.Port, p.TargetPort)
			}
		}
	}
	if !found {
		t.Errorf("Service has no port %v", provider["port"])
	}
	for k, v := range svc.Spec.Selector {
		if pod.Metadata.Labels[k] != v {
			t.Errorf("Service selector %s=%s does not match the pod labels %v", k, v, pod.Metadata.Labels)
		}
	}
	if len(svc.Spec.Selector) == 0 {
		t.Error("Service has no selector")
	}
}
