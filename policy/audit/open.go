package audit

import (
	"errors"
	"fmt"
	"os"

	"github.com/modelguard/modelguard/policy/config"
)

// New builds the Writer that cfg's audit section describes and recovers its
// chain: nil (and no error) when audit.output is "off" and no HTTP endpoint
// is set. Errors name the configuration field, file and line.
func New(cfg *config.Config, opts Options) (*Writer, error) {
	a := cfg.Audit
	key, err := cfg.AuditKey()
	if err != nil {
		return nil, cfg.Error(&config.FieldError{Path: keyPath(a), Err: err})
	}
	var sinks []Sink
	switch a.Output {
	case "off":
	case "stdout":
		sinks = append(sinks, NewStreamSink("stdout", os.Stdout))
	default:
		sinks = append(sinks, NewFileSink(cfg.Path(a.Output), int64(a.MaxFileBytes), a.MaxFiles, opts.Logger))
	}
	if a.HTTP.URL != "" {
		tok, err := cfg.AuditToken()
		if err != nil {
			return nil, cfg.Error(&config.FieldError{Path: "audit.http.token_file", Err: err})
		}
		sinks = append(sinks, NewHTTPSink(HTTPSettings{
			URL: a.HTTP.URL, Token: tok, Timeout: a.HTTP.Timeout,
			SpoolDir: cfg.Path(a.SpoolDir), SpoolMaxBytes: int64(a.SpoolMaxBytes),
		}, opts.Logger, opts.Metrics))
	}
	if len(sinks) == 0 {
		return nil, nil
	}
	w, err := NewWriter(Settings{
		FlushInterval: a.FlushInterval, QueueSize: a.QueueSize,
		Block: a.OnFull == "block", BlockTimeout: a.BlockTimeout, Key: key,
	}, opts, sinks...)
	if err != nil {
		path := "audit"
		var se *SinkError
		if errors.As(err, &se) {
			path = map[string]string{"file": "audit.output", "http": "audit.spool_dir"}[se.Sink]
		}
		return nil, cfg.Error(&config.FieldError{Path: path, Err: err})
	}
	return w, nil
}

func keyPath(a config.Audit) string {
	if a.KeyEnv != "" {
		return "audit.key_env"
	}
	return "audit.key_file"
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
