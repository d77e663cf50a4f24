//go:build (linux && cgo) || (windows && (amd64 || arm64))

package redirector

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"
)

// Protocol is an IP protocol number.
type Protocol uint8

// The protocols the library redirects.
const (
	TCP Protocol = 6
	UDP Protocol = 17
)

func (p Protocol) String() string {
	return enumString("protocol", int(p), map[int]string{int(TCP): "tcp", int(UDP): "udp"})
}

// enumString names a value of a small enumeration, or says kind(value).
func enumString(kind string, v int, names map[int]string) string {
	if s, ok := names[v]; ok {
		return s
	}
	return kind + "(" + strconv.Itoa(v) + ")"
}

// Direction says who opened a redirected connection.
type Direction uint8

const (
	// Outbound: a connection an intercepted process opened.
	Outbound Direction = 0
	// Inbound: a connection to an intercepted process's listening socket.
	Inbound Direction = 1
)

func (d Direction) String() string {
	return enumString("direction", int(d), map[int]string{int(Outbound): "outbound", int(Inbound): "inbound"})
}

// PortRange is an inclusive range of ports; Port(443) is a single port.
type PortRange struct{ Low, High uint16 }

// Port is the range of one port.
func Port(p uint16) PortRange { return PortRange{p, p} }

// Bypass classes: traffic of these classes is never redirected.
const (
	BypassLoopback  = "loopback"
	BypassMulticast = "multicast"
	BypassBroadcast = "broadcast"
	BypassLinkLocal = "link-local"
	BypassDHCP      = "dhcp"
)

// Logger receives the package's few log lines (start, stop, an event
// goroutine that could not continue). *log.Logger satisfies it.
type Logger interface {
	Printf(format string, v ...any)
}

// Options configure a Redirector. The zero value intercepts nothing. Every
// field maps to the library's configuration (windows_redirector.h,
// set_redirector_config), which checks the values and names a wrong field
// in its error.
//
// Zero values mean the same everywhere: a field left zero (0, nil, "") takes
// the library's default, in New and in SetConfig alike, and AppPort 0 keeps
// the port in force (none at first). Where "none" is not the default it has
// a name: NoHeldPackets for MaxHeldPackets, a non-nil empty Bypass.
type Options struct {
	// AppPort is the local port your proxy listens on (update_app_port).
	// 0 keeps the port in force: none in New (Start fails until one is set:
	// Listen(":0") then SetAppPort is fine), the current one in SetConfig.
	AppPort uint16

	// PIDs are intercepted (intercept_pids).
	PIDs []int

	// Trees are PIDs whose whole process trees are intercepted
	// (intercept_trees): each process and every process it starts, and
	// theirs, also after a parent has exited. A PID names the process that
	// has it when the configuration is set: a process that gets the PID
	// later (a reused PID) is not in the tree. The same as a "tree:<pid>"
	// entry at the end of Intercept.
	Trees []int

	// Intercept is the process spec, mitmproxy style (intercept): each entry
	// is a PID ("1234") or a pattern matched case-insensitively against the
	// executable's path ("curl", `*\chrome.exe`); a leading "!" excludes.
	// Entries apply in order; everything is intercepted first only when the
	// first entry is an exclusion ("!curl" intercepts everything but curl).
	// A "tree:" prefix makes an entry a process tree: "tree:1234" is process
	// 1234 and all its descendants, "tree:bash" every process started (at
	// any depth) by a process matching bash, "!tree:1234" excludes a subtree.
	Intercept []string

	// Protocols to redirect; nil means TCP and UDP.
	Protocols []Protocol
	// Directions to redirect; nil means both.
	Directions []Direction

	// Ports and ExcludePorts select destination ports; nil Ports means all.
	Ports, ExcludePorts []PortRange
	// Destinations and ExcludeDestinations select destination ranges; nil
	// Destinations means all.
	Destinations, ExcludeDestinations []netip.Prefix

	// Bypass lists the classes of traffic never redirected (Bypass*
	// constants). nil means the library's default (all of them); a non-nil
	// empty slice bypasses none.
	Bypass []string

	// Limits; 0 means the library's default.
	MaxFlows       int           // flow table size, 16..1048576 (default 65536; at the next Start)
	MaxHeldPackets int           // packets held while owners are unknown, 1..65536 (default 1024); NoHeldPackets for none
	HoldTimeout    time.Duration // wait for a new connection's owner (default 2 s, at most 60 s)
	TCPIdleTimeout time.Duration // idle TCP flow lifetime (default 2 h)
	UDPIdleTimeout time.Duration // idle UDP flow lifetime (default 60 s)

	// Description is free text (description).
	Description string

	// WinDivertDir is the folder holding WinDivert.dll and WinDivert64.sys
	// (Windows); "" searches the folder of windows_redirector.dll, then the
	// application's folder, then System32.
	WinDivertDir string

	// Logger, if set, receives the package's log lines.
	Logger Logger
}

// NoHeldPackets as Options.MaxHeldPackets holds no packet while a new
// connection's owner is unknown (max_held_packets 0).
const NoHeldPackets = -1

// configJSON renders the library configuration. Go strings may hold bytes
// that are not UTF-8, which encoding/json would silently replace: those are
// refused here with the code the library gives (ErrNotUTF8).
func (o *Options) configJSON(op string) (string, error) {
	cfg := map[string]any{}
	if o.PIDs != nil {
		cfg["intercept_pids"] = o.PIDs
	}
	if o.Trees != nil {
		cfg["intercept_trees"] = o.Trees
	}
	if o.Description != "" {
		if !utf8.ValidString(o.Description) {
			return "", goError(op, ErrNotUTF8, "Options.Description is not valid UTF-8")
		}
		cfg["description"] = o.Description
	}
	if o.Intercept != nil {
		for i, s := range o.Intercept {
			if !utf8.ValidString(s) {
				return "", goError(op, ErrNotUTF8, fmt.Sprintf("Options.Intercept[%d] is not valid UTF-8", i))
			}
		}
		cfg["intercept"] = o.Intercept
	}
	if o.Protocols != nil {
		names := make([]string, len(o.Protocols))
		for i, p := range o.Protocols {
			names[i] = p.String()
		}
		cfg["protocols"] = names
	}
	if o.Directions != nil {
		names := make([]string, len(o.Directions))
		for i, d := range o.Directions {
			names[i] = d.String()
		}
		cfg["directions"] = names
	}
	ports := func(key string, rs []PortRange) {
		if rs == nil {
			return
		}
		items := make([]any, len(rs))
		for i, r := range rs {
			if r.Low == r.High {
				items[i] = r.Low
			} else {
				items[i] = fmt.Sprintf("%d-%d", r.Low, r.High)
			}
		}
		cfg[key] = items
	}
	ports("ports", o.Ports)
	ports("exclude_ports", o.ExcludePorts)
	prefixes := func(key string, ps []netip.Prefix) {
		if ps == nil {
			return
		}
		items := make([]string, len(ps))
		for i, p := range ps {
			items[i] = p.String() // an invalid Prefix reads "invalid Prefix": the library names it
		}
		cfg[key] = items
	}
	prefixes("destinations", o.Destinations)
	prefixes("exclude_destinations", o.ExcludeDestinations)
	if o.Bypass != nil {
		cfg["bypass"] = o.Bypass
	}
	if o.MaxFlows != 0 {
		cfg["max_flows"] = o.MaxFlows
	}
	switch o.MaxHeldPackets {
	case 0:
	case NoHeldPackets:
		cfg["max_held_packets"] = 0
	default:
		cfg["max_held_packets"] = o.MaxHeldPackets // the library names a value out of range
	}
	millis := func(key string, d time.Duration) {
		if d == 0 {
			return
		}
		ms := d.Milliseconds()
		if d > 0 && d%time.Millisecond != 0 {
			ms++ // round up: 1.5 ms waits 2 ms, never 0
		}
		cfg[key] = ms
	}
	millis("hold_timeout_ms", o.HoldTimeout)
	millis("tcp_idle_timeout_ms", o.TCPIdleTimeout)
	millis("udp_idle_timeout_ms", o.UDPIdleTimeout)
	b, err := json.Marshal(cfg)
	if err != nil {
		return "", goError(op, ErrBadConfig, err.Error())
	}
	return string(b), nil
}
