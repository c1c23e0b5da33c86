package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/modelguard/modelguard/policy/audit"
)

const auditUsage = `Usage:
  modelguard audit verify [-key-file FILE | -key-env VAR] [-partial] [-anchor FILE-anchor] FILE...

Checks an audit trail: FILEs are one trail, oldest first (for a rotated
file: FILE.[0-9]* FILE). Reports the first edited, deleted, inserted,
reordered or truncated record as FILE:LINE and exits 1; prints a summary and
exits 0 when every record verifies. With -anchor (the FILE-anchor the
server keeps next to the trail), records deleted from the end are found too.
`

// auditCmd runs "modelguard audit SUBCOMMAND".
func auditCmd(args []string, stdout, stderr io.Writer) int {
	if code := subcommand("audit", "verify", auditUsage, args, stdout, stderr); code >= 0 {
		return code
	}
	flags := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() { fmt.Fprint(stderr, auditUsage); flags.PrintDefaults() }
	keyFile := flags.String("key-file", "", "file holding the HMAC key of a keyed trail (one trailing newline ignored)")
	keyEnv := flags.String("key-env", "", "environment variable holding the HMAC key of a keyed trail")
	partial := flags.Bool("partial", false, "the files start after the first record of the trail (older files were removed)")
	anchorFile := flags.String("anchor", "", "the trail's anchor file (<output>-anchor): the trail must reach the record it names")
	if code := parseFlags(flags, args[1:]); code >= 0 {
		return code
	}
	if flags.NArg() == 0 {
		return usageError(flags, "no files")
	}
	key, err := readAuditKey(*keyFile, *keyEnv)
	if err != nil {
		fmt.Fprintf(stderr, "modelguard audit verify: %v\n", err)
		return 2
	}
	opts := audit.VerifyOptions{Key: key, Partial: *partial}
	if *anchorFile != "" {
		a, err := audit.ReadAnchor(*anchorFile)
		if err != nil {
			fmt.Fprintf(stderr, "modelguard audit verify: %v\n", err)
			return 2
		}
		opts.Anchor = &a
	}
	sum, err := audit.VerifyFiles(flags.Args(), opts)
	if err != nil {
		// A file that cannot be read says nothing about the trail: 2, like
		// any setup error; 1 is kept for a trail that does not verify.
		var ve *audit.VerifyError
		var pe *fs.PathError
		switch {
		case errors.As(err, &ve):
			fmt.Fprintf(stdout, "FAIL %v\n", err)
		case errors.As(err, &pe):
			fmt.Fprintf(stderr, "modelguard audit verify: %v\n", err)
			return 2
		default:
			fmt.Fprintf(stderr, "modelguard audit verify: %v\n", err)
		}
		return 1
	}
	chain := "unkeyed (SHA-256)"
	if sum.Keyed {
		chain = "keyed (HMAC-SHA256)"
	}
	start := "from the start of the trail"
	if sum.FirstPrev != strings.Repeat("0", 64) {
		start = "prev " + sum.FirstPrev
	}
	anchored := ""
	if opts.Anchor != nil {
		anchored = fmt.Sprintf(", anchor at seq %d matches", opts.Anchor.Seq)
	}
	fmt.Fprintf(stdout, "OK %d files, %d records, seq %d to %d (%s), %s, last hash %s%s\n",
		sum.Files, sum.Records, sum.FirstSeq, sum.LastSeq, start, chain, sum.LastHash, anchored)
	return 0
}

// readAuditKey reads the HMAC key the way the configuration does: one
// trailing newline is not part of it, and it must be at least 32 bytes.
func readAuditKey(file, env string) ([]byte, error) {
	var key []byte
	switch {
	case file != "" && env != "":
		return nil, errors.New("-key-file and -key-env are exclusive")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		key = b
	case env != "":
		v, ok := os.LookupEnv(env)
		if !ok {
			return nil, fmt.Errorf("environment variable %s is not set", env)
		}
		key = []byte(v)
	default:
		return nil, nil
	}
	if k, ok := bytes.CutSuffix(key, []byte("\n")); ok {
		key, _ = bytes.CutSuffix(k, []byte("\r"))
	}
	if len(key) < audit.MinKeyBytes {
		return nil, fmt.Errorf("weak key: %d bytes, need at least %d", len(key), audit.MinKeyBytes)
	}
	return key, nil
}
