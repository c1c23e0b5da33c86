package body

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"io"
	"runtime"
	"strings"
	"testing"
)

// compress runs data through one of the standard library's compressors.
func compress(t testing.TB, data []byte, newWriter func(io.Writer) (io.WriteCloser, error)) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := newWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func gz(t testing.TB, data []byte) []byte {
	return compress(t, data, func(w io.Writer) (io.WriteCloser, error) { return gzip.NewWriterLevel(w, gzip.BestCompression) })
}

func zl(t testing.TB, data []byte) []byte {
	return compress(t, data, func(w io.Writer) (io.WriteCloser, error) { return zlib.NewWriterLevel(w, zlib.BestCompression) })
}

func rawDeflate(t testing.TB, data []byte) []byte {
	return compress(t, data, func(w io.Writer) (io.WriteCloser, error) { return flate.NewWriter(w, flate.BestCompression) })
}

func TestDecodeAccepts(t *testing.T) {
	body := chatBody(4 << 10)
	gzBody, zlBody := gz(t, body), zl(t, body)
	tests := []struct {
		name     string
		raw      []byte
		encoding string
	}{
		{"no encoding", body, ""},
		{"identity", body, "identity"},
		{"identity with odd case and spaces", body, " Identity "},
		{"gzip", gzBody, "gzip"},
		{"x-gzip", gzBody, "x-gzip"},
		{"gzip, case-insensitive", gzBody, "GZip"},
		{"gzip with identity and empty list elements", gzBody, "identity, ,gzip,"},
		{"gzip with tab", gzBody, "\tgzip"},
		{"deflate (zlib)", zlBody, "deflate"},
		{"concatenated gzip members", append(gz(t, body[:1000]), gz(t, body[1000:])...), "gzip"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(tc.raw, false, tc.encoding, Limits{})
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !bytes.Equal(got, body) {
				t.Errorf("got %d bytes, want the original %d", len(got), len(body))
			}
		})
	}
}

func TestDecodeLimitBoundary(t *testing.T) {
	const limit = 4096
	exact := bytes.Repeat([]byte("a"), limit)
	for _, tc := range []struct {
		name     string
		raw      []byte
		encoding string
		wantErr  bool
	}{
		{"identity at the limit", exact, "", false},
		{"identity one over", append(exact, 'a'), "", true},
		{"gzip output at the limit", gz(t, exact), "gzip", false},
		{"gzip output one over", gz(t, append(exact, 'a')), "gzip", true},
		{"deflate output at the limit", zl(t, exact), "deflate", false},
		{"deflate output one over", zl(t, append(exact, 'a')), "deflate", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(tc.raw, false, tc.encoding, Limits{MaxBytes: limit})
			if !tc.wantErr {
				if err != nil || !bytes.Equal(got, exact) {
					t.Fatalf("got %d bytes, err %v", len(got), err)
				}
				return
			}
			if got != nil {
				t.Errorf("returned %d bytes with an error", len(got))
			}
			checkError(t, err, 413, ReasonTooLarge)
		})
	}
}

func TestDecodeRefuses(t *testing.T) {
	body := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}`)
	gzBody := gz(t, body)
	corrupt := bytes.Clone(gzBody)
	corrupt[len(corrupt)-12] ^= 0xff // in the compressed data or CRC: fails either way
	badCRC := bytes.Clone(gzBody)
	badCRC[len(badCRC)-8] ^= 0x01
	badSize := bytes.Clone(gzBody)
	badSize[len(badSize)-4] ^= 0x01
	badAdler := zl(t, body)
	badAdler[len(badAdler)-1] ^= 0x01

	tests := []struct {
		name      string
		raw       []byte
		truncated bool
		encoding  string
		lim       Limits
		status    int
		reason    string
	}{
		{"truncated", body, true, "", Limits{}, 413, ReasonTruncated},
		{"truncated wins over an unsupported encoding", body, true, "br", Limits{}, 413, ReasonTruncated},
		{"truncated gzip", gzBody[:len(gzBody)/2], true, "gzip", Limits{}, 413, ReasonTruncated},
		{"over MaxBytes as received", body, false, "", Limits{MaxBytes: 10}, 413, ReasonTooLarge},
		{"compressed input over MaxBytes", gzBody, false, "gzip", Limits{MaxBytes: len(gzBody) - 1}, 413, ReasonTooLarge},

		{"br", body, false, "br", Limits{}, 415, ReasonEncodingUnsupported},
		{"zstd", body, false, "zstd", Limits{}, 415, ReasonEncodingUnsupported},
		{"compress", body, false, "compress", Limits{}, 415, ReasonEncodingUnsupported},
		{"unknown", body, false, "x-snappy", Limits{}, 415, ReasonEncodingUnsupported},
		{"parameters are not codings", gzBody, false, "gzip;q=1", Limits{}, 415, ReasonEncodingUnsupported},
		{"stacked gzip", gz(t, gzBody), false, "gzip, gzip", Limits{}, 415, ReasonEncodingUnsupported},
		{"stacked gzip and deflate", gzBody, false, "deflate, gzip", Limits{}, 415, ReasonEncodingUnsupported},
		{"gzip then br", gzBody, false, "gzip, br", Limits{}, 415, ReasonEncodingUnsupported},

		{"not gzip at all", body, false, "gzip", Limits{}, 400, ReasonDecompressionFailed},
		{"empty gzip body", nil, false, "gzip", Limits{}, 400, ReasonDecompressionFailed},
		{"corrupt gzip data", corrupt, false, "gzip", Limits{}, 400, ReasonDecompressionFailed},
		{"gzip CRC mismatch", badCRC, false, "gzip", Limits{}, 400, ReasonDecompressionFailed},
		{"gzip size mismatch", badSize, false, "gzip", Limits{}, 400, ReasonDecompressionFailed},
		{"gzip cut short", gzBody[:len(gzBody)-6], false, "gzip", Limits{}, 400, ReasonDecompressionFailed},
		{"data after gzip", append(bytes.Clone(gzBody), "junk-after-the-stream"...), false, "gzip", Limits{}, 400, ReasonDecompressionFailed},
		{"gzip labelled deflate", gzBody, false, "deflate", Limits{}, 400, ReasonDecompressionFailed},
		{"raw DEFLATE without zlib wrapper", rawDeflate(t, body), false, "deflate", Limits{}, 400, ReasonDecompressionFailed},
		{"zlib Adler-32 mismatch", badAdler, false, "deflate", Limits{}, 400, ReasonDecompressionFailed},
		{"data after zlib", append(zl(t, body), 'x'), false, "deflate", Limits{}, 400, ReasonDecompressionFailed},
		{"empty deflate body", nil, false, "deflate", Limits{}, 400, ReasonDecompressionFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(tc.raw, tc.truncated, tc.encoding, tc.lim)
			if got != nil {
				t.Errorf("returned %d bytes with an error", len(got))
			}
			checkError(t, err, tc.status, tc.reason)
		})
	}
}

// A gzip bomb stops at MaxBytes: 10 MiB of zeros (about 10 KiB compressed)
// against a 1 MiB limit is refused without materialising the 10 MiB. The
// bound is on bytes allocated, measured by the runtime, not on time.
func TestDecodeBomb(t *testing.T) {
	zeros := make([]byte, 10<<20)
	for _, tc := range []struct {
		encoding string
		raw      []byte
	}{{"gzip", gz(t, zeros)}, {"deflate", zl(t, zeros)}} {
		t.Run(tc.encoding, func(t *testing.T) {
			if len(tc.raw) > 64<<10 {
				t.Fatalf("bomb is %d bytes compressed; want a high ratio", len(tc.raw))
			}
			lim := Limits{MaxBytes: 1 << 20}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			got, err := Decode(tc.raw, false, tc.encoding, lim)
			runtime.ReadMemStats(&after)
			if got != nil {
				t.Fatalf("bomb decoded to %d bytes", len(got))
			}
			checkError(t, err, 413, ReasonTooLarge)
			// Doubling up to MaxBytes+1 costs under 2*MaxBytes, plus the
			// decompressor's window and tables.
			allocated := after.TotalAlloc - before.TotalAlloc
			t.Logf("allocated %d bytes", allocated)
			if allocated > 3<<20 {
				t.Errorf("allocated %d bytes decoding the bomb; want under 3 MiB (the output is 10 MiB)", allocated)
			}
		})
	}
}

func TestDecodeIdentityAliases(t *testing.T) {
	raw := []byte(`{"a":1}`)
	got, err := Decode(raw, false, "", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if &got[0] != &raw[0] {
		t.Error("identity body was copied")
	}
}

// Decode and Parse together: a compressed body gets the same strict parse.
func TestDecodeThenParse(t *testing.T) {
	raw := gz(t, []byte(`{"model":"cheap","model":"expensive"}`))
	data, err := Decode(raw, false, "gzip", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Parse(data, Limits{Names: names{"model"}})
	checkError(t, err, 400, ReasonDuplicateKey)
	if !strings.Contains(err.Error(), `"/model"`) {
		t.Errorf("error %q does not name the pointer", err)
	}
}

func BenchmarkDecodeGzip(b *testing.B) {
	body := chatBody(64 << 10)
	raw := gz(b, body)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(raw, false, "gzip", Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}
