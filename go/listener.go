//go:build (linux && cgo) || (windows && (amd64 || arm64))

package redirector

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
)

// Listen listens on the app port (network "tcp", "tcp4" or "tcp6"; address
// e.g. ":8080", or ":0" followed by SetAppPort) and accepts only the
// connections the library redirected, each with its Origin:
//
//	c, err := ln.AcceptRedirected()
//	o := c.Origin() // o.Destination, o.PID, o.Process, ...
//
// The app port is open to more than redirected connections: on Windows the
// proxy must listen on the wildcard address with an inbound firewall rule for
// the port, so other machines can reach it, and any local process can
// connect to it. Such a direct connection must not be served as if it were
// redirected: Accept closes it at once, counts it (Refused) and logs the first
// ones (Options.Logger), unless AcceptDirect is set.
func (r *Redirector) Listen(network, address string) (*Listener, error) {
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	return &Listener{Listener: ln, r: r}, nil
}

// Listener accepts redirected connections and looks up their origin.
type Listener struct {
	net.Listener // the listening socket itself

	// AcceptDirect, when set (before the first Accept), makes Accept return
	// connections the library did not redirect too, with Redirected false
	// and OriginErr saying why (ErrNotFound: not redirected), for a program
	// that serves both.
	AcceptDirect bool

	r       *Redirector
	refused atomic.Uint64
}

// refusedLogged is how many refusals a Listener logs; later ones are only
// counted.
const refusedLogged = 10

// Port is the port the listener is bound to.
func (l *Listener) Port() uint16 {
	if a, ok := l.Addr().(*net.TCPAddr); ok {
		return uint16(a.Port)
	}
	return 0
}

// Accept waits for the next redirected connection and returns it as a *Conn
// that carries its Origin (see AcceptRedirected).
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.AcceptRedirected()
	if err != nil {
		return nil, err
	}
	return c, nil
}

// AcceptRedirected waits for the next connection the library redirected,
// looks up its origin and returns it. Connections that were not redirected
// (or whose origin cannot be known: the redirector stopped) are closed and
// counted in Refused, unless AcceptDirect is set. It fails when the
// listener does, and with ErrClosed once the Redirector is closed.
func (l *Listener) AcceptRedirected() (*Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		o, err := l.r.Lookup(c)
		if err == nil || l.AcceptDirect {
			return &Conn{Conn: c, origin: o, err: err}, nil
		}
		c.Close()
		if errors.Is(err, ErrClosed) {
			return nil, err
		}
		if n := l.refused.Add(1); n <= refusedLogged {
			more := ""
			if n == refusedLogged {
				more = "; further ones are only counted (Listener.Refused)"
			}
			l.r.logf("redirector: closed a connection from %s to the app port: not redirected (%v)%s",
				c.RemoteAddr(), err, more)
		}
	}
}

// Refused is how many connections Accept closed because they were not
// redirected.
func (l *Listener) Refused() uint64 { return l.refused.Load() }

// Conn is an accepted connection with its origin.
type Conn struct {
	net.Conn
	origin Origin
	err    error
}

// Origin is where the connection was going (the zero Origin when it was not
// redirected, which Accept returns only with AcceptDirect: see OriginErr). It
// is looked up once, at Accept; for current byte counts call
// Redirector.Lookup.
func (c *Conn) Origin() Origin { return c.origin }

// OriginErr is nil for a redirected connection, else why the lookup failed
// (ErrNotFound: not redirected).
func (c *Conn) OriginErr() error { return c.err }

// Redirected reports whether the library redirected this connection.
func (c *Conn) Redirected() bool { return c.err == nil }

// NetConn returns the underlying connection (a *net.TCPConn).
func (c *Conn) NetConn() net.Conn { return c.Conn }

// CloseWrite shuts down the writing side (a TCP half-close), so a proxy can
// pass on the client's end of data.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// CloseRead shuts down the reading side.
func (c *Conn) CloseRead() error {
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return nil
}

// ReadFrom lets io.Copy into the connection use the kernel's fast paths
// (splice on Linux) when the source allows it.
func (c *Conn) ReadFrom(src io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, src)
}
