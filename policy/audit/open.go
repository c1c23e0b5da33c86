package audit

import (
	"errors"
	"fmt"
	"os"

	"github.com/modelguard/modelguard/policy/field"
)

// New builds the Writer that c describes (paths relative to baseDir) and
// recovers its chain: nil (and no error) when the output is "off" and no HTTP
// endpoint is set. Errors about a setting are *field.Error relative to the
// section.
func New(c Config, baseDir string, opts Options) (*Writer, error) {
	key, err := c.key(baseDir)
	if err != nil {
		return nil, &field.Error{Path: c.keyPath(), Err: err}
	}
	var sinks []Sink
	switch c.Output {
	case "off":
	case "stdout":
		sinks = append(sinks, NewStreamSink("stdout", os.Stdout))
	default:
		sinks = append(sinks, NewFileSink(resolve(c.Output, baseDir), int64(c.MaxFileBytes), c.MaxFiles, opts.Logger))
	}
	if c.HTTP.URL != "" {
		tok, err := c.token(baseDir)
		if err != nil {
			return nil, &field.Error{Path: c.tokenPath(), Err: err}
		}
		sinks = append(sinks, NewHTTPSink(HTTPSettings{
			URL: c.HTTP.URL, Token: tok, Timeout: c.HTTP.Timeout,
			SpoolDir: resolve(c.SpoolDir, baseDir), SpoolMaxBytes: int64(c.SpoolMaxBytes),
		}, opts.Logger, opts.Metrics))
	}
	if len(sinks) == 0 {
		return nil, nil
	}
	w, err := NewWriter(Settings{
		Durability: c.Durability, FlushInterval: c.FlushInterval, QueueSize: c.QueueSize,
		Block: c.OnFull == "block", BlockTimeout: c.BlockTimeout, Key: key,
	}, opts, sinks...)
	if err != nil {
		path := ""
		var se *SinkError
		if errors.As(err, &se) {
			path = map[string]string{"file": "output", "http": "spool_dir"}[se.Sink]
		}
		return nil, &field.Error{Path: path, Err: err}
	}
	return w, nil
}

// Open returns a Writer for one output with default settings: "stdout",
// "off" (nil Writer) or a file path, without rotation. Record writes the
// line before it returns; fsyncs are grouped every 100ms. Tools and tests
// use it; the server uses New.
func Open(output string) (*Writer, error) {
	var sink Sink
	switch output {
	case "off":
		return nil, nil
	case "", "stdout":
		sink = NewStreamSink("stdout", os.Stdout)
	default:
		sink = NewFileSink(output, 0, 0, nil)
	}
	w, err := NewWriter(Settings{}, Options{}, sink)
	if err != nil {
		return nil, fmt.Errorf("audit: open %s: %w", output, err)
	}
	return w, nil
}
