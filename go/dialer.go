//go:build cgo && (linux || windows)

package redirector

import (
	"net"
	"syscall"
)

// Dialer returns a net.Dialer for your proxy's upstream connections: each
// socket is passed to redirector_exclude_socket before it connects, so the
// capture never needs to look at it. Optional — the library never
// intercepts this process's own connections anyway — but on Linux it spares
// every upstream connection a trip through the queue and an owner look-up
// (it sets a socket mark, which needs CAP_NET_ADMIN; without it the dial
// still works, only without the saving). On Windows it changes nothing.
func (r *Redirector) Dialer() *net.Dialer {
	return &net.Dialer{Control: excludeControl}
}

func excludeControl(network, address string, c syscall.RawConn) error {
	// A failure to mark is not a failure to dial: ignore it.
	return c.Control(func(fd uintptr) { cExcludeSocket(fd) })
}
