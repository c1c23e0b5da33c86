package kongharness

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	kpp "github.com/Kong/go-pdk/server/kong_plugin_protocol"
	"google.golang.org/protobuf/proto"
)

// PluginConf is one plugin entity as Kong holds it: its id, the sequence
// number of its current configuration, where it is attached, and its
// config fields (a nil value is sent as null, as for an unset field).
type PluginConf struct {
	ID        string
	Seq       int
	RouteID   string
	ServiceID string
	Config    map[string]any
}

// JSON is the configuration as Kong encodes it for cmd_start_instance: the
// config fields plus the metadata keys Kong adds.
func (pc PluginConf) JSON(name string) []byte {
	m := make(map[string]any, len(pc.Config)+6)
	for k, v := range pc.Config {
		m[k] = v
	}
	orNull := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	m["__seq__"] = pc.Seq
	m["__plugin_id"] = pc.ID
	m["__key__"] = "plugins:" + name + ":" + pc.RouteID + ":" + pc.ServiceID + "::"
	m["route_id"] = orNull(pc.RouteID)
	m["service_id"] = orNull(pc.ServiceID)
	m["consumer_id"] = nil
	b, err := json.Marshal(m)
	if err != nil {
		panic(err) // test configurations always marshal
	}
	return b
}

// Kong is the Lua side of the plugin server protocol for one plugin.
type Kong struct {
	Socket string
	Name   string
	// Retries bounds the restart-and-retry of an event; 0, as Kong, retries
	// without limit (a plugin server that is gone fails to connect, which
	// is not retried).
	Retries int
	// ReadTimeout bounds each read from the plugin, as the cosocket's
	// lua_socket_read_timeout (60 s by default; Kong sets none of its own)
	// does: a plugin that does not answer in time fails the event with
	// "timeout", which Kong does not retry (a 500).
	ReadTimeout time.Duration

	msgID atomic.Int64

	poolMu sync.Mutex
	idle   []net.Conn // keepalive pool, as Kong's cosockets

	mu        sync.Mutex
	instances map[string]*instanceInfo // Kong's running_instances, by plugin id

	// Counters of what Kong asked, for tests.
	Starts, Closes, Resets atomic.Int64
}

type instanceInfo struct {
	id  int32
	seq int
}

// New returns Kong's side for the plugin name listening on socket.
func New(socket, name string) *Kong {
	return &Kong{Socket: socket, Name: name, ReadTimeout: 60 * time.Second, instances: map[string]*instanceInfo{}}
}

// Handler answers the PDK calls of one event.
type Handler interface {
	// Answer returns the answer frame for method (nil: an empty frame), or
	// errExit for kong.response.exit (no answer), or another error for a
	// call Kong refuses (the connection is dropped).
	Answer(phase, method string, args []byte) ([]byte, error)
}

// errExit marks kong.response.exit: Kong never answers it.
var errExit = errors.New("kong.response.exit")

// Outcome is how an event ended.
type Outcome struct {
	Exited   bool  // the plugin called kong.response.exit
	Err      error // Kong gave up: a 500 for the access phase
	Attempts int   // handle_event calls, > 1 after a restart
}

// HandleEvent runs one event as Kong's Rpc:handle_event does: find or
// start the instance for pc, call cmd_handle_event answering PDK calls, and
// on "no plugin instance" or a closed connection reset the instances and
// try again.
func (k *Kong) HandleEvent(pc PluginConf, phase string, h Handler) Outcome {
	var out Outcome
	for {
		out.Attempts++
		id, err := k.instanceID(pc)
		if err != nil {
			out.Err = fmt.Errorf("starting instance: %w", err)
			return out
		}
		_, err = k.call(&kpp.RpcCall{Call: &kpp.RpcCall_CmdHandleEvent{CmdHandleEvent: &kpp.CmdHandleEvent{InstanceId: id, EventName: phase}}},
			func(method string, args []byte) ([]byte, error) { return h.Answer(phase, method, args) })
		switch {
		case errors.Is(err, errExit):
			out.Exited = true
			return out
		case err == nil:
			return out
		}
		msg := strings.ToLower(err.Error())
		if (strings.Contains(msg, "no plugin instance") || strings.Contains(msg, "closed")) && (k.Retries == 0 || out.Attempts <= k.Retries) {
			k.Reset()
			continue
		}
		out.Err = err
		return out
	}
}

// Reset forgets every instance of the plugin (Kong's reset_instance).
func (k *Kong) Reset() {
	k.Resets.Add(1)
	k.mu.Lock()
	clear(k.instances)
	k.mu.Unlock()
}

// instanceID is Kong's get_instance_id: the running instance for the
// plugin id when its __seq__ matches, else a new one (closing the old).
func (k *Kong) instanceID(pc PluginConf) (int32, error) {
	k.mu.Lock()
	info := k.instances[pc.ID]
	k.mu.Unlock()
	if info != nil && info.seq == pc.Seq {
		return info.id, nil
	}
	id, err := k.StartInstance(pc)
	if err != nil {
		return 0, err
	}
	k.mu.Lock()
	k.instances[pc.ID] = &instanceInfo{id: id, seq: pc.Seq}
	k.mu.Unlock()
	if info != nil {
		_ = k.CloseInstance(info.id) // errors ignored, as Kong does
	}
	return id, nil
}

// StartInstance sends cmd_start_instance with pc's Kong-shaped JSON.
func (k *Kong) StartInstance(pc PluginConf) (int32, error) {
	k.Starts.Add(1)
	ret, err := k.call(&kpp.RpcCall{Call: &kpp.RpcCall_CmdStartInstance{CmdStartInstance: &kpp.CmdStartInstance{Name: k.Name, Config: pc.JSON(k.Name)}}}, nil)
	if err != nil {
		return 0, err
	}
	st := ret.GetInstanceStatus()
	if st == nil {
		return 0, fmt.Errorf("start_instance returned %v", ret)
	}
	return st.GetInstanceId(), nil
}

// CloseInstance sends cmd_close_instance (a configuration change, or
// eviction).
func (k *Kong) CloseInstance(id int32) error {
	k.Closes.Add(1)
	_, err := k.call(&kpp.RpcCall{Call: &kpp.RpcCall_CmdCloseInstance{CmdCloseInstance: &kpp.CmdCloseInstance{InstanceId: id}}}, nil)
	return err
}

// InstanceID returns the id Kong holds for a plugin, if any.
func (k *Kong) InstanceID(pluginID string) (int32, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	info := k.instances[pluginID]
	if info == nil {
		return 0, false
	}
	return info.id, true
}

// call is Kong's Rpc:call: one RpcCall, then, with a bridge, the PDK loop
// until the plugin's empty frame, then the RpcReturn.
func (k *Kong) call(rpc *kpp.RpcCall, bridge func(method string, args []byte) ([]byte, error)) (*kpp.RpcReturn, error) {
	c, err := k.conn()
	if err != nil {
		return nil, fmt.Errorf("trying to connect: %w", err)
	}
	fail := func(err error) (*kpp.RpcReturn, error) {
		c.Close()
		if !errors.Is(err, errExit) {
			k.dropIdle() // the peer may be gone: do not reuse its connections
		}
		return nil, err
	}
	seq := k.msgID.Add(1)
	rpc.Sequence = seq
	msg, err := proto.Marshal(rpc)
	if err != nil {
		return fail(err)
	}
	if err := writeFrame(c, msg); err != nil {
		return fail(closed(err))
	}
	for bridge != nil {
		method, err := k.read(c)
		if err != nil {
			return fail(closed(err))
		}
		if len(method) == 0 {
			break
		}
		args, err := k.read(c)
		if err != nil {
			return fail(closed(err))
		}
		reply, err := bridge(string(method), args)
		if err != nil {
			return fail(err)
		}
		if err := writeFrame(c, reply); err != nil {
			return fail(closed(err))
		}
	}
	b, err := k.read(c)
	if err != nil {
		return fail(closed(err))
	}
	var ret kpp.RpcReturn
	if err := proto.Unmarshal(b, &ret); err != nil {
		return fail(err)
	}
	if ret.GetSequence() != seq {
		return fail(fmt.Errorf("return sequence %d, want %d", ret.GetSequence(), seq))
	}
	k.release(c)
	return &ret, nil
}

// closed words a connection error as OpenResty does ("closed"), which is
// what Kong's retry logic looks for.
func closed(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("closed: %w", err)
	}
	return err
}

func (k *Kong) conn() (net.Conn, error) {
	k.poolMu.Lock()
	if n := len(k.idle); n > 0 {
		c := k.idle[n-1]
		k.idle = k.idle[:n-1]
		k.poolMu.Unlock()
		return c, nil
	}
	k.poolMu.Unlock()
	c, err := net.DialTimeout("unix", k.Socket, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (k *Kong) release(c net.Conn) {
	k.poolMu.Lock()
	defer k.poolMu.Unlock()
	if len(k.idle) < 64 {
		k.idle = append(k.idle, c)
		return
	}
	c.Close()
}

func (k *Kong) dropIdle() {
	k.poolMu.Lock()
	idle := k.idle
	k.idle = nil
	k.poolMu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}

// Close closes pooled connections.
func (k *Kong) Close() { k.dropIdle() }

// read reads one frame within ReadTimeout; a timeout is worded as
// OpenResty words it.
func (k *Kong) read(c net.Conn) ([]byte, error) {
	if k.ReadTimeout > 0 {
		_ = c.SetReadDeadline(time.Now().Add(k.ReadTimeout))
	}
	b, err := readFrame(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil, fmt.Errorf("timeout: %w", err)
	}
	return b, err
}

func readFrame(c net.Conn) ([]byte, error) {
	var n uint32
	if err := binary.Read(c, binary.LittleEndian, &n); err != nil {
		return nil, err
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		return nil, err
	}
	return b, nil
}

func writeFrame(c net.Conn, b []byte) error {
	buf := make([]byte, 4+len(b))
	binary.LittleEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	_, err := c.Write(buf)
	return err
}
