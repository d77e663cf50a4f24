//go:build (linux && cgo) || (windows && (amd64 || arm64))

package redirector

// The C ABI's structs and constants as Go sees them, written once for both
// ways of calling the library (capi.go with cgo on Linux, capi_windows.go
// without cgo on Windows). The fields are in the header's order with the
// same fixed-width types, so on 64-bit targets the layout is the C layout;
// capi.go checks the sizes at compile time and a test checks every offset
// against the C header (TestLayoutEqualsTheHeader).

import (
	"bytes"
	"net/netip"
	"time"
	"unsafe"
)

// The header's other constants (a test keeps them equal).
const (
	faultConfig  = 1 // REDIRECTOR_FAULT_CONFIG
	faultPackets = 2 // REDIRECTOR_FAULT_PACKETS
	faultMemory  = 4 // REDIRECTOR_FAULT_MEMORY
)

// rawEndpoint is redirector_endpoint.
type rawEndpoint struct {
	family   uint8
	reserved uint8
	port     uint16
	addr     [16]byte
}

// rawOrigin is redirector_origin.
type rawOrigin struct {
	size, protocol, direction, pid uint32
	destination, client, peer      rawEndpoint
	appPort, reserved              uint16
	flowID                         uint32
	bytesUp, bytesDown             uint64
	processPath                    [1024]byte
}

// rawEvent is redirector_event.
type rawEvent struct {
	size, typ uint32
	timeMS    uint64
	origin    rawOrigin
}

// rawStats is redirector_stats.
type rawStats struct {
	size, running   uint32
	packets         uint64
	rewritten       uint64
	passed          uint64
	held            uint64
	dropped         uint64
	malformed       uint64
	fragments       uint64
	flowsActive     uint64
	flowsRedirected uint64
	flowsPassed     uint64
	flowsExpired    uint64
	tableFull       uint64
	evictions       uint64
	holdTimeouts    uint64
	ownerFacts      uint64
	ownerQueries    uint64
	eventsLost      uint64
	natConflicts    uint64
	bypassed        uint64
	lookups         uint64
	lookupMisses    uint64
	engineRestarts  uint64
	flowCapacity    uint64
	bytesPerFlow    uint64

	redirectedSynUnanswered uint64
	redirectedSynRefused    uint64
}

// The sizes the library checks in each struct's size field.
const (
	rawOriginSize = uint32(unsafe.Sizeof(rawOrigin{}))
	rawEventSize  = uint32(unsafe.Sizeof(rawEvent{}))
	rawStatsSize  = uint32(unsafe.Sizeof(rawStats{}))
)

func (ep *rawEndpoint) set(ap netip.AddrPort) {
	a := ap.Addr()
	*ep = rawEndpoint{port: ap.Port()}
	if a.Is4() {
		ep.family = 4
		b := a.As4()
		copy(ep.addr[:], b[:])
		return
	}
	ep.family = 6
	ep.addr = a.As16()
}

func (ep *rawEndpoint) get() netip.AddrPort {
	var a netip.Addr
	switch ep.family {
	case 4:
		a = netip.AddrFrom4([4]byte(ep.addr[:4]))
	case 6:
		a = netip.AddrFrom16(ep.addr)
	default:
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a, ep.port)
}

// cString is the text of a NUL-terminated char array. (bytes.IndexByte
// looks for the NUL many bytes at a time: a byte loop cost a lookup ~4
// instructions per byte of its process path.)
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}

func (o *rawOrigin) get(out *Origin) {
	*out = Origin{
		Destination: o.destination.get(),
		Client:      o.client.get(),
		Peer:        o.peer.get(),
		PID:         int(o.pid),
		Process:     cString(o.processPath[:]),
		Protocol:    Protocol(o.protocol),
		Direction:   Direction(o.direction),
		AppPort:     o.appPort,
		FlowID:      o.flowID,
		BytesUp:     o.bytesUp,
		BytesDown:   o.bytesDown,
	}
}

func (e *rawEvent) get(out *Event) {
	out.Type = EventType(e.typ)
	out.Time = time.Duration(e.timeMS) * time.Millisecond
	e.origin.get(&out.Origin)
}

func (st *rawStats) get() Stats {
	return Stats{
		Running:         st.running != 0,
		Packets:         st.packets,
		Rewritten:       st.rewritten,
		Passed:          st.passed,
		Held:            st.held,
		Dropped:         st.dropped,
		Malformed:       st.malformed,
		Fragments:       st.fragments,
		FlowsActive:     st.flowsActive,
		FlowsRedirected: st.flowsRedirected,
		FlowsPassed:     st.flowsPassed,
		FlowsExpired:    st.flowsExpired,
		TableFull:       st.tableFull,
		Evictions:       st.evictions,
		HoldTimeouts:    st.holdTimeouts,
		OwnerFacts:      st.ownerFacts,
		OwnerQueries:    st.ownerQueries,
		EventsLost:      st.eventsLost,
		NATConflicts:    st.natConflicts,
		Bypassed:        st.bypassed,
		Lookups:         st.lookups,
		LookupMisses:    st.lookupMisses,
		EngineRestarts:  st.engineRestarts,
		FlowCapacity:    st.flowCapacity,
		BytesPerFlow:    st.bytesPerFlow,

		RedirectedSynUnanswered: st.redirectedSynUnanswered,
		RedirectedSynRefused:    st.redirectedSynRefused,
	}
}
