package secret

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"crlf": "s3cret\r\n", "two": "s3cret\n\n", "pem": "-----BEGIN\n", "empty": ""} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("SECRET_TEST", "from-env\n")
	t.Setenv("SECRET_TEST_BLANK", " \n")
	for _, tt := range []struct {
		name      string
		file, env string
		trim      bool
		want, err string
	}{
		{name: "CRLF trimmed", file: "crlf", trim: true, want: "s3cret"},
		{name: "only one newline trimmed", file: "two", trim: true, want: "s3cret\n"},
		{name: "kept whole without trim", file: "pem", want: "-----BEGIN\n"},
		{name: "environment", env: "SECRET_TEST", trim: true, want: "from-env"},
		{name: "empty file", file: "empty", err: "is empty"},
		{name: "missing file", file: "nope", err: "no such file"},
		{name: "unset variable", env: "SECRET_TEST_UNSET", err: "SECRET_TEST_UNSET is not set"},
		{name: "blank variable", env: "SECRET_TEST_BLANK", err: "SECRET_TEST_BLANK is empty"},
		{name: "neither", err: "exactly one"},
		{name: "both", file: "crlf", env: "SECRET_TEST", err: "exactly one"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			file := tt.file
			if file != "" {
				file = filepath.Join(dir, file)
			}
			got, err := Read(file, tt.env, tt.trim)
			switch {
			case tt.err != "":
				if err == nil || !strings.Contains(err.Error(), tt.err) || got != nil {
					t.Errorf("Read = %q, %v; want an error with %q", got, err, tt.err)
				}
			case err != nil || string(got) != tt.want:
				t.Errorf("Read = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
