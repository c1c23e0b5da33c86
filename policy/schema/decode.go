package schema

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// decodeStrict reads one JSON document as the jsonschema package expects it
// (numbers as json.Number), refusing duplicate object keys and trailing
// data. encoding/json keeps the last of duplicate keys, so a schema file
// with two "required" members would silently lose one of them.
func decodeStrict(r io.Reader) (any, error) {
	d := json.NewDecoder(r)
	d.UseNumber()
	v, err := decodeValue(d)
	if err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("invalid JSON: data after the top-level value")
	}
	return v, nil
}

func decodeValue(d *json.Decoder) (any, error) {
	tok, err := d.Token()
	if err != nil {
		return nil, fmt.Errorf("invalid JSON at byte %d: %w", d.InputOffset(), err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			obj := map[string]any{}
			for d.More() {
				ktok, err := d.Token()
				if err != nil {
					return nil, fmt.Errorf("invalid JSON at byte %d: %w", d.InputOffset(), err)
				}
				key := ktok.(string) // the decoder only yields string keys inside an object
				if _, dup := obj[key]; dup {
					return nil, fmt.Errorf("invalid JSON at byte %d: duplicate key %q", d.InputOffset(), key)
				}
				if obj[key], err = decodeValue(d); err != nil {
					return nil, err
				}
			}
			if _, err := d.Token(); err != nil { // '}'
				return nil, fmt.Errorf("invalid JSON at byte %d: %w", d.InputOffset(), err)
			}
			return obj, nil
		case '[':
			arr := []any{}
			for d.More() {
				v, err := decodeValue(d)
				if err != nil {
					return nil, err
				}
				arr = append(arr, v)
			}
			if _, err := d.Token(); err != nil { // ']'
				return nil, fmt.Errorf("invalid JSON at byte %d: %w", d.InputOffset(), err)
			}
			return arr, nil
		}
		return nil, fmt.Errorf("invalid JSON at byte %d: unexpected %q", d.InputOffset(), t)
	default:
		return tok, nil // string, json.Number, bool or nil
	}
}
