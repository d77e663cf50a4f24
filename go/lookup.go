//go:build (linux && cgo) || (windows && (amd64 || arm64))

package redirector

import (
	"fmt"
	"net"
	"net/netip"
)

// Origin is what the library knows about a redirected connection.
type Origin struct {
	// Destination is where the connection was going (inbound: the
	// intercepted listener's own address).
	Destination netip.AddrPort
	// Client is who opened it (outbound: the intercepted process's end).
	Client netip.AddrPort
	// Peer is the remote address the proxy sees.
	Peer netip.AddrPort
	// PID and Process (the executable's path, "" when unknown) name the
	// intercepted process.
	PID       int
	Process   string
	Protocol  Protocol
	Direction Direction
	// AppPort is the port the connection was sent to.
	AppPort uint16
	// FlowID is unique per connection while the library runs.
	FlowID uint32
	// BytesUp (client to destination) and BytesDown so far.
	BytesUp, BytesDown uint64
}

// Lookup returns where a connection the proxy accepted (a TCP connection, or
// a connected UDP socket) was going. ErrNotFound when it was not redirected
// (or is already forgotten), ErrNotRunning, ErrInvalid for other kinds of
// connection.
func (r *Redirector) Lookup(conn net.Conn) (Origin, error) {
	if c, ok := conn.(*Conn); ok {
		conn = c.Conn
	}
	if conn == nil {
		return Origin{}, goError("Lookup", ErrInvalid, "the connection is nil")
	}
	switch local := conn.LocalAddr().(type) {
	case *net.TCPAddr:
		if peer, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
			return r.LookupAddrPort(TCP, addrPort(local.IP, local.Port), addrPort(peer.IP, peer.Port))
		}
	case *net.UDPAddr:
		if peer, ok := conn.RemoteAddr().(*net.UDPAddr); ok {
			return r.LookupAddrPort(UDP, addrPort(local.IP, local.Port), addrPort(peer.IP, peer.Port))
		}
	}
	return Origin{}, goError("Lookup", ErrInvalid, fmt.Sprintf("not a TCP or UDP connection (local %T, remote %T)",
		conn.LocalAddr(), conn.RemoteAddr()))
}

// LookupUDP returns where a datagram the proxy received was going: local is
// the proxy socket's address (LocalAddr) and peer the sender (ReadFrom).
func (r *Redirector) LookupUDP(local, peer net.Addr) (Origin, error) {
	l, ok1 := local.(*net.UDPAddr)
	p, ok2 := peer.(*net.UDPAddr)
	if !ok1 || !ok2 || l == nil || p == nil {
		return Origin{}, goError("LookupUDP", ErrInvalid, fmt.Sprintf("need two *net.UDPAddr, got %T and %T", local, peer))
	}
	return r.LookupAddrPort(UDP, addrPort(l.IP, l.Port), addrPort(p.IP, p.Port))
}

// LookupAddrPort is Lookup by addresses: local is the proxy's own address
// (unspecified means any) and peer the remote address it sees. IPv4-mapped
// IPv6 addresses, as dual-stack sockets report them, are understood.
func (r *Redirector) LookupAddrPort(proto Protocol, local, peer netip.AddrPort) (Origin, error) {
	if proto != TCP && proto != UDP {
		return Origin{}, goError("Lookup", ErrInvalid, fmt.Sprintf("protocol %d is neither TCP nor UDP", proto))
	}
	if !peer.Addr().IsValid() || !local.Addr().IsValid() {
		return Origin{}, goError("Lookup", ErrInvalid, "local and peer must both be valid addresses")
	}
	var o Origin
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return Origin{}, ErrClosed
	}
	if rc, e := r.sc.lookup(proto, peer, local, &o); rc != 0 {
		return Origin{}, opError("Lookup", e)
	}
	return o, nil
}

// addrPort converts a net.IP (nil meaning unspecified) and a port.
func addrPort(ip net.IP, port int) netip.AddrPort {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		a = netip.IPv6Unspecified()
	}
	return netip.AddrPortFrom(a, uint16(port))
}
