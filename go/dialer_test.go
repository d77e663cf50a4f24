//go:build (linux && cgo) || (windows && (amd64 || arm64))

package redirector

import (
	"net"
	"testing"
)

// dialListener dials a TCP listener of the test's own through r's Dialer.
func dialListener(t *testing.T, r *Redirector) net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	c, err := r.Dialer().Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial through the Dialer: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// The Dialer dials, on Windows too: redirector_exclude_socket binds an
// unbound socket there, and Go binds each TCP socket itself before
// ConnectEx, so a Dialer that excluded its sockets there could not connect.
func TestDialerDials(t *testing.T) {
	dialListener(t, open(t, Options{AppPort: 18094}))
}
