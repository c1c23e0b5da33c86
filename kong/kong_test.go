// Package kong_test checks the shipped Kong configuration offline (Kong
// cannot be installed here): the kong.conf lines against what Kong needs to
// run the plugin server, and the plugin configuration in kong.yml against
// the schema the binary gives Kong (-dump).
package kong_test

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/modelguard/modelguard/kongplugin"
	"github.com/modelguard/modelguard/test/kongharness"
)

func TestKongConf(t *testing.T) {
	f, err := os.Open("kong.conf")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	conf := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("not a kong.conf line: %q", line)
		}
		conf[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	const (
		bin    = "/usr/local/bin/modelguard"
		prefix = "/usr/local/kong"
	)
	want := map[string]string{
		"plugins":                           "bundled,modelguard",
		"pluginserver_names":                "modelguard",
		"pluginserver_modelguard_socket":    prefix + "/modelguard.socket",
		"pluginserver_modelguard_start_cmd": bin + " -kong-prefix " + prefix,
		"pluginserver_modelguard_query_cmd": bin + " -dump",
	}
	for k, v := range want {
		if conf[k] != v {
			t.Errorf("%s = %q, want %q", k, conf[k], v)
		}
	}
	// The plugin is named after the binary; go-pdk listens on
	// <prefix>/<name>.socket.
	if filepath.Base(bin) != "modelguard" || filepath.Join(prefix, filepath.Base(bin)+".socket") != conf["pluginserver_modelguard_socket"] {
		t.Errorf("the socket is not where the plugin server listens")
	}
}

func TestKongYAMLMatchesSchema(t *testing.T) {
	bin := kongharness.Build(t, "github.com/modelguard/modelguard/cmd/modelguard", "modelguard")
	info, err := kongharness.Dump(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := info.Validate("modelguard"); err != nil {
		t.Fatal(err)
	}
	fields, err := info.Plugins[0].ConfigFields()
	if err != nil {
		t.Fatal(err)
	}

	raw, err := os.ReadFile("kong.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Format   string `yaml:"_format_version"`
		Services []struct {
			Name    string   `yaml:"name"`
			URL     string   `yaml:"url"`
			Plugins []plugin `yaml:"plugins"`
			Routes  []struct {
				Name      string   `yaml:"name"`
				Paths     []string `yaml:"paths"`
				StripPath *bool    `yaml:"strip_path"`
				Protocols []string `yaml:"protocols"`
				Plugins   []plugin `yaml:"plugins"`
			} `yaml:"routes"`
		} `yaml:"services"`
		Plugins []plugin `yaml:"plugins"`
	}
	// Strict: a misspelt key (plugin: for plugins:) would hide the plugin.
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("kong.yml: %v", err)
	}
	if doc.Format != "3.0" {
		t.Errorf("_format_version %q, want 3.0", doc.Format)
	}
	var found int
	check := func(where string, ps []plugin) {
		for _, p := range ps {
			// acl decides on modelguard's roles only with this setting (see
			// kong.yml); without it an allow list denies every caller and a
			// deny list lets every caller through.
			if p.Name == "acl" && p.Config["always_use_authenticated_groups"] != true {
				t.Errorf("%s: acl without always_use_authenticated_groups: true ignores modelguard's roles", where)
			}
			if p.Name != "modelguard" {
				continue
			}
			found++
			for k, v := range p.Config {
				typ, ok := fields[k]
				if !ok {
					t.Errorf("%s: config.%s is not in the plugin's schema %v", where, k, fields)
					continue
				}
				if _, isString := v.(string); typ == "string" && !isString {
					t.Errorf("%s: config.%s = %v, want a string", where, k, v)
				}
			}
			if p.Config["config_path"] != kongplugin.DefaultConfigPath {
				t.Errorf("%s: config_path %v, want %s", where, p.Config["config_path"], kongplugin.DefaultConfigPath)
			}
		}
	}
	check("top level", doc.Plugins)
	for _, s := range doc.Services {
		if s.URL == "" {
			t.Errorf("service %s has no url", s.Name)
		}
		check("service "+s.Name, s.Plugins)
		for _, r := range s.Routes {
			check("route "+r.Name, r.Plugins)
			// Model paths reach the model server unchanged.
			if r.StripPath == nil || *r.StripPath || !slices.Contains(r.Paths, "/v1") {
				t.Errorf("route %s: paths %v, strip_path %v", r.Name, r.Paths, r.StripPath)
			}
		}
	}
	if found != 1 {
		t.Errorf("modelguard is attached %d times, want once", found)
	}
}

type plugin struct {
	Name   string         `yaml:"name"`
	Config map[string]any `yaml:"config"`
}
