package body

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"io"
	"net/http"
	"strings"
)

// Decode turns the body bytes a gateway received into the body modelguard
// inspects. It refuses a body the gateway cut short (413 body_truncated:
// the missing part could hold anything), a body over lim.MaxBytes (413),
// and decompresses per Content-Encoding: "" or identity as is; gzip, x-gzip
// and deflate (zlib format) with the output capped at lim.MaxBytes, so a
// decompression bomb stops there with 413 after at most about 2*MaxBytes of
// allocation. Any other coding (br, zstd, compress, ...) and stacked codings
// ("gzip, gzip") get 415 body_encoding_unsupported; a corrupt stream, or
// data after its end, gets 400 body_decompression_failed. Content coding
// names are case-insensitive; empty list elements and identity are ignored.
//
// The result aliases raw when there is nothing to decompress.
func Decode(raw []byte, truncated bool, contentEncoding string, lim Limits) ([]byte, error) {
	if truncated {
		return nil, wholeBodyError(http.StatusRequestEntityTooLarge, ReasonTruncated, "was truncated before inspection")
	}
	limit := lim.maxBytes()
	if len(raw) > limit {
		return nil, wholeBodyError(http.StatusRequestEntityTooLarge, ReasonTooLarge, "is too large")
	}
	coding, cerr := singleCoding(contentEncoding)
	if cerr != nil {
		return nil, cerr
	}
	if coding == "" {
		return raw, nil
	}
	var r io.Reader
	src := bytes.NewReader(raw) // only now: it escapes into the decompressor
	switch coding {
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(src)
		if err != nil {
			return nil, decompressionFailed()
		}
		r = zr
	case "deflate":
		// bytes.Reader is an io.ByteReader, so the zlib reader consumes
		// exactly the stream and src.Len() shows what follows it.
		zr, err := zlib.NewReader(src)
		if err != nil {
			return nil, decompressionFailed()
		}
		r = zr
	}
	out, over, err := readCapped(r, limit, len(raw))
	switch {
	case over:
		return nil, wholeBodyError(http.StatusRequestEntityTooLarge, ReasonTooLarge, "is too large after decompression")
	case err != nil:
		return nil, decompressionFailed()
	case src.Len() != 0:
		// gzip reads concatenated members until the end and fails on
		// anything else; zlib stops after its checksum, so check here.
		return nil, decompressionFailed()
	}
	return out, nil
}

func decompressionFailed() *Error {
	return wholeBodyError(http.StatusBadRequest, ReasonDecompressionFailed, "could not be decompressed")
}

// singleCoding returns the one content coding to undo ("" for none).
func singleCoding(header string) (string, *Error) {
	coding := ""
	for elem := range strings.SplitSeq(header, ",") {
		c := strings.ToLower(strings.Trim(elem, " \t"))
		switch c {
		case "", "identity":
			continue
		case "gzip", "x-gzip", "deflate":
			if coding != "" {
				return "", wholeBodyError(http.StatusUnsupportedMediaType, ReasonEncodingUnsupported, "has stacked content encodings, which are not supported")
			}
			coding = c
		default:
			// Never echo the header: it is client text.
			return "", wholeBodyError(http.StatusUnsupportedMediaType, ReasonEncodingUnsupported, "has an unsupported content encoding (supported: gzip, deflate)")
		}
	}
	return coding, nil
}

// readCapped reads r to its end, or stops once more than limit bytes came
// out (over). The buffer grows by doubling from a guess and never beyond
// limit+1 bytes, and at most limit+1 bytes are ever requested from r.
func readCapped(r io.Reader, limit, sizeHint int) (out []byte, over bool, err error) {
	capacity := min(max(sizeHint*4, 512), limit+1)
	buf := make([]byte, 0, capacity)
	lr := io.LimitReader(r, int64(limit)+1)
	for {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(2*cap(buf), limit+1))
			copy(grown, buf)
			buf = grown
		}
		n, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > limit {
			return nil, true, nil
		}
		if errors.Is(err, io.EOF) {
			return buf, false, nil
		}
		if err != nil {
			return nil, false, err
		}
	}
}
