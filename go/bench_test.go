//go:build (linux && cgo) || (windows && (amd64 || arm64))

package redirector

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
)

// Lookups cost one cgo call, the library's lock and the engine's table
// search. Until the capture backend redirects traffic here, every lookup is
// a miss (ErrNotFound), which does the same search; a hit also copies the
// origin out and converts its process path to a Go string.
func benchRedirector(b *testing.B) *Redirector {
	r := open(b, Options{AppPort: 18090})
	if err := r.Start(context.Background()); err != nil {
		b.Skipf("needs a running redirector: %v", err)
	}
	return r
}

func BenchmarkLookup(b *testing.B) {
	r := benchRedirector(b)
	local := netip.MustParseAddrPort("10.0.0.1:18090")
	peer := netip.MustParseAddrPort("198.18.0.10:443")
	benchLoop(b, func() error { _, err := r.LookupAddrPort(TCP, local, peer); return err })
}

func benchLoop(b *testing.B, lookup func() error) {
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := lookup(); !errors.Is(err, ErrNotFound) {
			b.Fatal(err)
		}
	}
}

// The same through Lookup(net.Conn), as a proxy calls it per connection.
func BenchmarkLookupConn(b *testing.B) {
	r := benchRedirector(b)
	conn := fakeConn{local: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 18090},
		remote: &net.TCPAddr{IP: net.IPv4(198, 18, 0, 10), Port: 443}}
	benchLoop(b, func() error { _, err := r.Lookup(conn); return err })
}

func BenchmarkLookupParallel(b *testing.B) {
	r := benchRedirector(b)
	local := netip.MustParseAddrPort("[::]:18090")
	peer := netip.MustParseAddrPort("[::ffff:198.18.0.10]:443")
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.LookupAddrPort(UDP, local, peer); !errors.Is(err, ErrNotFound) {
				b.Error(err)
				return
			}
		}
	})
}

type fakeConn struct {
	net.Conn
	local, remote net.Addr
}

func (c fakeConn) LocalAddr() net.Addr  { return c.local }
func (c fakeConn) RemoteAddr() net.Addr { return c.remote }
