package schema

import (
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// checkKServeV1Predict enforces "a request can have either of them but NOT
// both" (TensorFlow Serving REST API) for "instances" and "inputs". JSON
// Schema can say it (oneOf of two required), but its failure would only say
// "oneOf", not which case it was.
func checkKServeV1Predict(v any) *Violation {
	obj, ok := v.(map[string]any)
	if !ok {
		return &Violation{Rule: "type: want object"}
	}
	_, instances := obj["instances"]
	_, inputs := obj["inputs"]
	switch {
	case instances && inputs:
		return &Violation{Rule: "exactly one of instances, inputs: got both"}
	case !instances && !inputs:
		return &Violation{Rule: "exactly one of instances, inputs: got neither"}
	}
	return nil
}

// dtype describes an Open Inference Protocol tensor datatype.
type dtype struct {
	name string
	kind byte // 'b' bool, 'i' signed, 'u' unsigned, 'f' float, 's' bytes
	bits int  // integer width, for the range check
	max  float64
}

func lookupDtype(name string) (dtype, bool) {
	switch name {
	case "BOOL":
		return dtype{name: name, kind: 'b'}, true
	case "UINT8":
		return dtype{name: name, kind: 'u', bits: 8}, true
	case "UINT16":
		return dtype{name: name, kind: 'u', bits: 16}, true
	case "UINT32":
		return dtype{name: name, kind: 'u', bits: 32}, true
	case "UINT64":
		return dtype{name: name, kind: 'u', bits: 64}, true
	case "INT8":
		return dtype{name: name, kind: 'i', bits: 8}, true
	case "INT16":
		return dtype{name: name, kind: 'i', bits: 16}, true
	case "INT32":
		return dtype{name: name, kind: 'i', bits: 32}, true
	case "INT64":
		return dtype{name: name, kind: 'i', bits: 64}, true
	case "FP16":
		return dtype{name: name, kind: 'f', max: 65504}, true // largest finite half
	case "FP32":
		return dtype{name: name, kind: 'f', max: math.MaxFloat32}, true
	case "FP64":
		return dtype{name: name, kind: 'f', max: math.MaxFloat64}, true
	case "BYTES":
		return dtype{name: name, kind: 's'}, true
	}
	return dtype{}, false
}

// want describes the elements dt accepts, for a Violation rule.
func (dt dtype) want() string {
	switch dt.kind {
	case 'b':
		return "want boolean for BOOL"
	case 'u':
		return fmt.Sprintf("want integer in [0, %d] for %s", uint64(math.MaxUint64)>>(64-dt.bits), dt.name)
	case 'i':
		return fmt.Sprintf("want integer in [%d, %d] for %s", int64(-1)<<(dt.bits-1), int64(math.MaxInt64)>>(64-dt.bits), dt.name)
	case 'f':
		return "want finite number in range for " + dt.name
	}
	return "want string for BYTES"
}

// accepts reports whether el, a parsed JSON value, is an element of dt.
// Integers must be written as integers: Triton refuses 1.0 for INT32.
func (dt dtype) accepts(el any) bool {
	switch dt.kind {
	case 'b':
		_, ok := el.(bool)
		return ok
	case 's':
		_, ok := el.(string)
		return ok
	}
	n, ok := el.(json.Number)
	if !ok {
		return false
	}
	switch dt.kind {
	case 'u':
		_, err := strconv.ParseUint(string(n), 10, dt.bits)
		return err == nil
	case 'i':
		_, err := strconv.ParseInt(string(n), 10, dt.bits)
		return err == nil
	}
	f, err := strconv.ParseFloat(string(n), 64)
	return err == nil && math.Abs(f) <= dt.max
}

// checkOIPInfer checks each input tensor of an Open Inference Protocol
// request: a known datatype, non-negative integer dimensions whose product
// does not overflow, elements of the datatype's type and range, and as many
// elements (nested arrays flattened, row-major) as the shape's product. A
// shape of [] is a scalar: one element.
func checkOIPInfer(v any) *Violation {
	obj, ok := v.(map[string]any)
	if !ok {
		return &Violation{Rule: "type: want object"}
	}
	raw, ok := obj["inputs"]
	if !ok {
		return &Violation{Rule: "required: inputs"}
	}
	inputs, ok := raw.([]any)
	if !ok {
		return &Violation{Pointer: "/inputs", Rule: "type: want array"}
	}
	for i, in := range inputs {
		if viol := checkTensor("/inputs/"+strconv.Itoa(i), in); viol != nil {
			return viol
		}
	}
	return nil
}

func checkTensor(at string, v any) *Violation {
	t, ok := v.(map[string]any)
	if !ok {
		return &Violation{Pointer: at, Rule: "type: want object"}
	}
	for _, m := range [...]string{"shape", "datatype", "data"} {
		if _, ok := t[m]; !ok {
			return &Violation{Pointer: at, Rule: "required: " + m}
		}
	}
	name, ok := t["datatype"].(string)
	if !ok {
		return &Violation{Pointer: at + "/datatype", Rule: "type: want string"}
	}
	dt, ok := lookupDtype(name)
	if !ok {
		return &Violation{Pointer: at + "/datatype", Rule: "unknown tensor datatype"}
	}
	shape, ok := t["shape"].([]any)
	if !ok {
		return &Violation{Pointer: at + "/shape", Rule: "type: want array"}
	}
	want, viol := shapeProduct(at+"/shape", shape)
	if viol != nil {
		return viol
	}
	data, ok := t["data"].([]any)
	if !ok {
		return &Violation{Pointer: at + "/data", Rule: "type: want array"}
	}
	// Nested data has at most one level per dimension; a scalar is [x].
	w := walker{dt: dt, maxDepth: max(len(shape), 1)}
	if !w.walk(data, 1) {
		return &Violation{Pointer: at + "/data" + w.failAt(), Rule: w.failRule}
	}
	if w.count != want {
		return &Violation{Pointer: at + "/data", Rule: fmt.Sprintf("tensor data length %d != shape product %d", w.count, want)}
	}
	return nil
}

// shapeProduct multiplies the dimensions of shape, each a non-negative
// integer literal ("2", not "2.0": model servers parse dimensions as
// integers). The OIP spec allows any uint64 dimension, but a product that
// overflows uint64 is refused rather than wrapped (a zero dimension still
// makes it 0).
func shapeProduct(at string, shape []any) (uint64, *Violation) {
	prod := uint64(1)
	zero, overflow := false, false
	for j, d := range shape {
		n, ok := d.(json.Number)
		if !ok {
			return 0, &Violation{Pointer: at + "/" + strconv.Itoa(j), Rule: "type: want integer"}
		}
		dim, err := strconv.ParseUint(string(n), 10, 64)
		if err != nil {
			return 0, &Violation{Pointer: at + "/" + strconv.Itoa(j), Rule: "tensor dimension: want integer in [0, 18446744073709551615]"}
		}
		if dim == 0 {
			zero = true
		}
		if !overflow {
			hi, lo := bits.Mul64(prod, dim)
			overflow, prod = hi != 0, lo
		}
	}
	switch {
	case zero:
		return 0, nil
	case overflow:
		return 0, &Violation{Pointer: at, Rule: "tensor shape product overflows"}
	}
	return prod, nil
}

// walker flattens nested tensor data, counting and type-checking elements.
type walker struct {
	dt       dtype
	maxDepth int
	count    uint64
	path     []int // indexes from data down to the failure
	failRule string
}

// walk visits arr at nesting depth (1 for data itself) and reports whether
// every element below it is valid. On failure, path holds the indexes
// leading to the offending value, innermost last.
func (w *walker) walk(arr []any, depth int) bool {
	for i, el := range arr {
		if sub, ok := el.([]any); ok {
			if depth >= w.maxDepth {
				w.path, w.failRule = append(w.path, i), "tensor data nested deeper than shape"
				return false
			}
			if !w.walk(sub, depth+1) {
				w.path = append(w.path, i)
				return false
			}
			continue
		}
		if !w.dt.accepts(el) {
			w.path, w.failRule = append(w.path, i), "tensor element: "+w.dt.want()
			return false
		}
		w.count++
	}
	return true
}

// failAt renders path as a JSON pointer suffix, outermost first.
func (w *walker) failAt() string {
	var b strings.Builder
	for k := len(w.path) - 1; k >= 0; k-- {
		b.WriteByte('/')
		b.WriteString(strconv.Itoa(w.path[k]))
	}
	return b.String()
}
