//go:build (linux && cgo) || (windows && (amd64 || arm64))

package redirector

import (
	"net"
	"runtime"
	"syscall"
)

// Dialer returns a net.Dialer for your proxy's upstream connections.
// Optional — the library never intercepts this process's own connections
// anyway. On Linux each socket is passed to redirector_exclude_socket before
// it connects, so the capture never needs to look at it: that spares every
// upstream connection a trip through the queue and an owner look-up (it
// sets a socket mark, which needs CAP_NET_ADMIN; without it the dial still
// works, only without the saving). On Windows it is a plain net.Dialer:
// there redirector_exclude_socket binds a socket that is not bound yet, and
// Go binds each TCP socket itself after the Control hook (ConnectEx needs a
// bound socket), which would then fail.
func (r *Redirector) Dialer() *net.Dialer {
	if runtime.GOOS == "windows" {
		return &net.Dialer{}
	}
	return &net.Dialer{Control: excludeControl}
}

func excludeControl(network, address string, c syscall.RawConn) error {
	// A failure to mark is not a failure to dial: ignore it.
	return c.Control(func(fd uintptr) { cExcludeSocket(fd) })
}
