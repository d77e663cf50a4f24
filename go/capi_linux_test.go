//go:build linux && cgo

package redirector

import (
	"reflect"
	"strings"
	"testing"
	"unsafe"
)

// The package's codes and constants are the header's.
func TestErrorCodesEqualTheHeader(t *testing.T) {
	values := cErrorValues()
	if len(values) != len(errorText) {
		t.Fatalf("%d codes in the header map, %d in errors.go", len(values), len(errorText))
	}
	for code, c := range values {
		if int32(code) != c {
			t.Errorf("%v: Go value %d, C value %d", code, int32(code), c)
		}
	}
	consts := cConstants()
	for name, goValue := range map[string]int64{
		"TCP": int64(TCP), "UDP": int64(UDP), "Outbound": int64(Outbound), "Inbound": int64(Inbound),
		"EventOpened": int64(EventOpened), "EventClosed": int64(EventClosed),
		"FaultConfig": faultConfig, "FaultPackets": faultPackets, "FaultMemory": faultMemory,
	} {
		if consts[name] != goValue {
			t.Errorf("%s: Go %d, C %d", name, goValue, consts[name])
		}
	}
}

// The Go mirrors of the C structs (abi.go), which Windows passes to the DLL
// as they are, have the header's layout: every size and offset.
func TestLayoutEqualsTheHeader(t *testing.T) {
	mirrors := map[string]reflect.Type{"endpoint": reflect.TypeOf(rawEndpoint{}), "origin": reflect.TypeOf(rawOrigin{}),
		"event": reflect.TypeOf(rawEvent{}), "stats": reflect.TypeOf(rawStats{})}
	c := cLayout()
	for key, want := range c {
		name, field, _ := strings.Cut(key, ".")
		got := mirrors[name].Size()
		if field != "" {
			f, ok := mirrors[name].FieldByName(field)
			if !ok {
				t.Errorf("%s: no such field in the Go mirror", key)
				continue
			}
			got = f.Offset
		}
		if got != want {
			t.Errorf("%s: Go %d, C %d", key, got, want)
		}
	}
	// Every field is compared, but size and reserved (at the offsets the
	// others leave) and the stats counters, which are all uint64 between
	// packets and the last one.
	for name, typ := range mirrors {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i).Name
			if _, ok := c[name+"."+f]; !ok && f != "size" && f != "reserved" && name != "stats" {
				t.Errorf("%s.%s is not compared", name, f)
			}
		}
	}
	var st rawStats
	last := uintptr(c["stats"]) - 8 // the header's last counter
	if got := unsafe.Offsetof(st.redirectedSynRefused); got != last {
		t.Fatalf("rawStats ends at %d, the header's counters at %d", got, last)
	}
	if n := (last-unsafe.Offsetof(st.packets))/8 + 1; n != uintptr(reflect.TypeOf(st).NumField()-2) {
		t.Fatalf("%d counters in the header's range, %d in rawStats", n, reflect.TypeOf(st).NumField()-2)
	}
}
