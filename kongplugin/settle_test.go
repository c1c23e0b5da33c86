package kongplugin

import (
	"reflect"
	"testing"

	"github.com/Kong/go-pdk"
)

// go-pdk gives Kong the phases the instance type has as methods: a
// response phase (and Kong's buffering) only with Settle, and the same
// configuration fields either way.
func TestResponsePhaseOnlyWhenSettling(t *testing.T) {
	fields := func(v any) []reflect.StructField {
		ty := reflect.TypeOf(v).Elem()
		out := make([]reflect.StructField, 0, ty.NumField())
		for i := range ty.NumField() {
			if f := ty.Field(i); f.IsExported() {
				out = append(out, f)
			}
		}
		return out
	}
	want := fields(&Config{})
	for _, settle := range []bool{false, true} {
		p := New(Options{Settle: settle})
		c := p.NewConfig()
		p.Close()
		_, response := c.(interface{ Response(*pdk.PDK) })
		_, access := c.(interface{ Access(*pdk.PDK) })
		_, log := c.(interface{ Log(*pdk.PDK) })
		if response != settle || !access || !log {
			t.Errorf("settle %v: response %v, access %v, log %v", settle, response, access, log)
		}
		if got := fields(c); !reflect.DeepEqual(got, want) {
			t.Errorf("settle %v: fields %v, want %v", settle, got, want)
		}
	}
}
