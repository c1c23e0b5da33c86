// Package kongharness plays Kong's side of the Go plugin protocol for
// tests, since Kong cannot be installed here. It drives a real plugin
// binary over its unix socket as Kong 3.x does (kong/runloop/plugin_servers,
// and docs/kong-plugin-server.md):
//
//   - Dump runs the binary with -dump and Info.Validate checks what Kong
//     requires of the answer (protocol, name, phases, x.y.z version,
//     integer priority, schema types).
//   - Kong starts an instance per plugin configuration (cmd_start_instance
//     with the configuration as Kong encodes it: __seq__, __plugin_id,
//     __key__, route_id/service_id/consumer_id, null for unset fields),
//     starts a new one and closes the old when __seq__ changes, and handles
//     events (cmd_handle_event) by answering each PDK call the plugin makes:
//     a frame with the method name, a frame with the argument, one answer
//     frame (an empty frame is Lua nil).
//   - kong.response.exit is never answered: Kong drops the connection.
//   - an event that fails with "no plugin instance" or a closed connection
//     resets the plugin's instances and is retried (a restarted instance);
//     any other failure is a 500.
//   - a plugin whose -dump lists the response phase gets the whole
//     upstream response buffered and a response event before the client
//     is answered (Front.Phases); kong.service.response.* read it.
//   - the log phase is answered from data saved at the end of the request.
//
// Frames are a uint32 little-endian length and protobuf bytes, using
// go-pdk's generated kong_plugin_protocol types.
package kongharness

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelguard/modelguard/test/testkit"
)

// Build compiles the Go package pkg into a binary called name (a Go
// plugin's name is its binary's name) in a temporary directory, with extra
// go build flags (-race).
func Build(t testing.TB, pkg, name string, flags ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	args := append(append([]string{"build"}, flags...), "-o", bin, pkg)
	cmd := exec.Command("go", args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// Process is a running plugin server: the binary started as Kong starts it
// (pluginserver_<name>_start_cmd = <bin> -kong-prefix <prefix>).
type Process struct {
	Bin, Prefix, Socket string
	// Args follow -kong-prefix on the command line (the start_cmd's
	// plugin flags).
	Args []string

	t   testing.TB
	mu  sync.Mutex
	cmd *exec.Cmd
	out *testkit.SyncBuffer
}

// Start runs bin with -kong-prefix prefix and args and waits until its
// socket accepts connections. The process is killed when the test ends,
// and the test fails if the race detector reported in its output.
func Start(t testing.TB, bin, prefix string, args ...string) *Process {
	t.Helper()
	p := &Process{Bin: bin, Prefix: prefix, Args: args, Socket: filepath.Join(prefix, filepath.Base(bin)+".socket"), t: t, out: &testkit.SyncBuffer{}}
	t.Cleanup(func() {
		p.Kill()
		if out := p.Output(); strings.Contains(out, "WARNING: DATA RACE") {
			t.Errorf("the plugin server reported a data race:\n%s", out)
		}
	})
	p.Restart()
	return p
}

// Restart starts the binary again (after Kill): go-pdk removes the stale
// socket file and listens anew.
func (p *Process) Restart() {
	p.t.Helper()
	cmd := exec.Command(p.Bin, append([]string{"-kong-prefix", p.Prefix}, p.Args...)...)
	cmd.Stdout, cmd.Stderr = p.out, p.out
	// A test binary that dies must not leave plugin servers behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.Bin, err)
	}
	p.mu.Lock()
	p.cmd = cmd
	p.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("unix", p.Socket)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s never listened on %s: %v\n%s", p.Bin, p.Socket, err, p.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Kill sends SIGKILL (a crash) and waits for the process to exit.
func (p *Process) Kill() {
	p.mu.Lock()
	cmd := p.cmd
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// Stop sends SIGTERM, as Kong does when it stops, and waits for the exit.
func (p *Process) Stop() error {
	p.mu.Lock()
	cmd := p.cmd
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return errors.New("not running")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return errors.New("no exit within 30s of SIGTERM")
	}
}

// Output is what the process wrote to stdout and stderr (Kong's error.log).
func (p *Process) Output() string { return p.out.String() }

// Info is what a plugin binary prints for -dump (Kong's query_cmd).
type Info struct {
	Protocol   string
	SocketPath string
	Plugins    []PluginInfo
}

// PluginInfo describes one plugin. Priority stays a json.Number so that
// Validate can tell an integer from a float.
type PluginInfo struct {
	Name     string
	Phases   []string
	Version  string
	Priority json.Number
	Schema   map[string]any
}

// Dump runs bin -dump with extra arguments and decodes its single line.
func Dump(bin string, args ...string) (*Info, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, append([]string{"-dump"}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s -dump: %w: %s", bin, err, stderr.Bytes())
	}
	out := stdout.Bytes()
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	var info Info
	if err := dec.Decode(&info); err != nil {
		return nil, fmt.Errorf("%s -dump: %w", bin, err)
	}
	if rest := strings.TrimSpace(string(out[dec.InputOffset():])); rest != "" {
		return nil, fmt.Errorf("%s -dump: more than one JSON value: %q", bin, rest)
	}
	return &info, nil
}

var (
	versionRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+){0,2}$`)
	nameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	fieldRE   = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)
	phases    = []string{"certificate", "rewrite", "access", "response", "preread", "log"}
	// kongTypes are the schema types Kong's metaschema accepts that go-pdk can emit.
	kongTypes = []string{"string", "boolean", "integer", "number", "array", "set", "map", "record"}
)

// Validate checks the answer as Kong's plugin server loader would, for a
// binary called name: one plugin, ProtoBuf:1, the binary's name, known
// phases, an x.y.z version, an integer priority and a schema Kong accepts.
func (i *Info) Validate(name string) error {
	var errs []error
	if i.Protocol != "ProtoBuf:1" {
		errs = append(errs, fmt.Errorf("protocol %q, want ProtoBuf:1", i.Protocol))
	}
	if len(i.Plugins) != 1 {
		return errors.Join(append(errs, fmt.Errorf("%d plugins, want 1", len(i.Plugins)))...)
	}
	p := i.Plugins[0]
	if p.Name != name || !nameRE.MatchString(p.Name) {
		errs = append(errs, fmt.Errorf("name %q, want %q", p.Name, name))
	}
	if len(p.Phases) == 0 {
		errs = append(errs, errors.New("no phases"))
	}
	for _, ph := range p.Phases {
		if !slices.Contains(phases, ph) {
			errs = append(errs, fmt.Errorf("unknown phase %q", ph))
		}
	}
	if !versionRE.MatchString(p.Version) {
		errs = append(errs, fmt.Errorf("version %q is not x.y.z", p.Version))
	}
	if _, err := p.Priority.Int64(); err != nil {
		errs = append(errs, fmt.Errorf("priority %q is not an integer", p.Priority))
	}
	if _, err := p.ConfigFields(); err != nil {
		errs = append(errs, err)
	}
	if p.Schema["name"] != p.Name {
		errs = append(errs, fmt.Errorf("schema name %v, want %q", p.Schema["name"], p.Name))
	}
	return errors.Join(errs...)
}

// ConfigFields returns the config record's fields and their types, after
// checking every field (recursively) has a valid name and Kong type.
func (p PluginInfo) ConfigFields() (map[string]string, error) {
	fields, ok := p.Schema["fields"].([]any)
	if !ok || len(fields) != 1 {
		return nil, fmt.Errorf("schema fields %v: want [{config: ...}]", p.Schema["fields"])
	}
	cfg, ok := fields[0].(map[string]any)["config"].(map[string]any)
	if !ok || cfg["type"] != "record" {
		return nil, fmt.Errorf("schema has no config record: %v", fields[0])
	}
	if err := checkType("config", cfg); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, f := range cfg["fields"].([]any) {
		for name, decl := range f.(map[string]any) {
			out[name], _ = decl.(map[string]any)["type"].(string)
		}
	}
	return out, nil
}

func checkType(path string, decl map[string]any) error {
	typ, _ := decl["type"].(string)
	if !slices.Contains(kongTypes, typ) {
		return fmt.Errorf("%s: type %q is not a Kong schema type", path, decl["type"])
	}
	sub := func(key string) error {
		d, ok := decl[key].(map[string]any)
		if !ok {
			return fmt.Errorf("%s: %s without %s", path, typ, key)
		}
		return checkType(path+"."+key, d)
	}
	switch typ {
	case "array", "set":
		return sub("elements")
	case "map":
		return errors.Join(sub("keys"), sub("values"))
	case "record":
		fields, ok := decl["fields"].([]any)
		if !ok {
			return fmt.Errorf("%s: record without fields", path)
		}
		for _, f := range fields {
			m, ok := f.(map[string]any)
			if !ok || len(m) != 1 {
				return fmt.Errorf("%s: field %v is not {name: type}", path, f)
			}
			for name, d := range m {
				if !fieldRE.MatchString(name) {
					return fmt.Errorf("%s: field name %q is not valid in Kong (a json tag with options?)", path, name)
				}
				dm, ok := d.(map[string]any)
				if !ok {
					return fmt.Errorf("%s.%s: declaration %v", path, name, d)
				}
				if err := checkType(path+"."+name, dm); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
