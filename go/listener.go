//go:build (linux && cgo) || (windows && (amd64 || arm64))

package redirector

import (
	"io"
	"net"
)

// Listen listens on the app port (network "tcp", "tcp4" or "tcp6"; address
// e.g. ":8080", or ":0" followed by SetAppPort). Its Accept returns *Conn
// values that carry their Origin:
//
//	c, err := ln.Accept()
//	o := c.(*redirector.Conn).Origin()
func (r *Redirector) Listen(network, address string) (*Listener, error) {
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	return &Listener{Listener: ln, r: r}, nil
}

// Listener accepts redirected connections and looks up their origin.
type Listener struct {
	net.Listener
	r *Redirector
}

// Port is the port the listener is bound to.
func (l *Listener) Port() uint16 {
	if a, ok := l.Addr().(*net.TCPAddr); ok {
		return uint16(a.Port)
	}
	return 0
}

// Accept waits for the next connection and looks up its origin. A
// connection that was not redirected (someone connected to the app port
// directly) is returned too, with OriginErr set; Accept itself fails only
// when the listener does.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	o, err := l.r.Lookup(c)
	return &Conn{Conn: c, origin: o, err: err}, nil
}

// Conn is an accepted connection with its origin.
type Conn struct {
	net.Conn
	origin Origin
	err    error
}

// Origin is where the connection was going (the zero Origin when it was not
// redirected: see OriginErr). It is looked up once, at Accept; for current
// byte counts call Redirector.Lookup.
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
