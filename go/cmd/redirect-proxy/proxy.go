package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	redirector "windows-redirector/go/redirector"
)

// lookuper is the part of *redirector.Redirector the proxy uses for UDP
// (tests give their own).
type lookuper interface {
	LookupAddrPort(redirector.Protocol, netip.AddrPort, netip.AddrPort) (redirector.Origin, error)
}

// accepted is a TCP connection and what is known of where it was going.
type accepted struct {
	conn      net.Conn // the plain connection, so io.Copy can use the kernel's fast paths
	origin    redirector.Origin
	originErr error // why the origin is unknown (not redirected)
}

// tcpListener is what serveTCP accepts from: listener (the package's), or in
// the tests a plain listener with a stand-in lookup.
type tcpListener interface {
	acceptTCP() (accepted, error)
	Close() error
}

// listener serves a *redirector.Listener: its typed accept gives each
// connection with the origin it looked up, and returns only redirected ones
// (it closes and counts the others: Refused).
type listener struct{ *redirector.Listener }

func (l listener) acceptTCP() (accepted, error) {
	c, err := l.AcceptRedirected()
	if err != nil {
		return accepted{}, err
	}
	return accepted{c.NetConn(), c.Origin(), c.OriginErr()}, nil
}

type proxy struct {
	lookup  lookuper
	udpIdle time.Duration
	dialTCP func(addr string) (net.Conn, error)

	outMu sync.Mutex
	out   io.Writer

	// refused, when set, is how many direct connections the package's
	// Listener closed before the proxy saw them (Listener.Refused).
	refused func() uint64

	mu     sync.Mutex
	conns  map[net.Conn]struct{} // open TCP connections, both sides
	flows  map[netip.AddrPort]*udpFlow
	closed bool
	wg     sync.WaitGroup

	tcpCount, tcpFailed, notRedirected atomic.Int64
	udpCount, udpFailed, udpUnknown    atomic.Int64
	bytesUp, bytesDown                 atomic.Uint64
}

func newProxy(l lookuper, out io.Writer, udpIdle time.Duration) *proxy {
	return &proxy{
		lookup:  l,
		out:     out,
		udpIdle: udpIdle,
		dialTCP: func(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, 10*time.Second) },
		conns:   map[net.Conn]struct{}{},
		flows:   map[netip.AddrPort]*udpFlow{},
	}
}

func (p *proxy) printf(format string, v ...any) {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	fmt.Fprintf(p.out, format, v...)
}

// line prints one connection: time, protocol, process and PID, original
// destination, bytes each way, and how long it lasted or why it failed.
func (p *proxy) line(proto string, o redirector.Origin, up, down uint64, d time.Duration, note string) {
	who := fmt.Sprintf("%s (%d)", procName(o.Process), o.PID)
	if o.Direction == redirector.Inbound {
		who += " inbound"
	}
	if note == "" {
		note = fmt.Sprintf("%.2f s", d.Seconds())
	}
	p.printf("%s  %s  %-22s -> %-27s up %9s  down %9s  %s\n", time.Now().Format("15:04:05"), proto, who,
		o.Destination, humanBytes(up), humanBytes(down), note)
}

// track registers a connection to close at shutdown; false when shut down.
func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// serve runs the accept loop of tcp and the read loop of udp (either may be
// nil) until shutdown; wait returns once they and every connection and flow
// they started have ended. The loops count in p.wg themselves, so the Adds
// for what they start never race with wait.
func (p *proxy) serve(tcp tcpListener, udp *net.UDPConn) {
	if tcp != nil {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serveTCP(tcp)
		}()
	}
	if udp != nil {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serveUDP(udp)
		}()
	}
}

// serveTCP accepts until the listener closes.
func (p *proxy) serveTCP(ln tcpListener) {
	for {
		c, err := ln.acceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			p.printf("accept: %v\n", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.handleTCP(c)
		}()
	}
}

func (p *proxy) handleTCP(c accepted) {
	client, o := c.conn, c.origin
	defer client.Close()
	if c.originErr != nil {
		// Someone connected to the port directly: there is nowhere to relay,
		// and it must not be served. (The package's Listener never returns
		// such a connection; this guards any other source.)
		p.notRedirected.Add(1)
		p.printf("%s  TCP  %s connected to the proxy port directly (not redirected): closed\n",
			time.Now().Format("15:04:05"), client.RemoteAddr())
		return
	}
	if !p.track(client) {
		return
	}
	defer p.untrack(client)
	p.tcpCount.Add(1)
	start := time.Now()
	upstream, err := p.dialTCP(o.Destination.String())
	if err != nil {
		p.tcpFailed.Add(1)
		p.line("TCP", o, 0, 0, 0, "failed: "+shortErr(err))
		return
	}
	defer upstream.Close()
	if !p.track(upstream) {
		return
	}
	defer p.untrack(upstream)
	up, down := relay(client, upstream)
	p.bytesUp.Add(up)
	p.bytesDown.Add(down)
	p.line("TCP", o, up, down, time.Since(start), "")
}

// relay copies both ways until both sides have ended, passing each side's
// end of data on as a half-close; an error on either side closes both.
func relay(client, upstream net.Conn) (up, down uint64) {
	var wg sync.WaitGroup
	half := func(dst, src net.Conn, n *uint64) {
		defer wg.Done()
		c, err := io.Copy(dst, src)
		*n = uint64(c)
		if err != nil {
			dst.Close()
			src.Close()
			return
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	wg.Add(2)
	go half(upstream, client, &up)
	go half(client, upstream, &down)
	wg.Wait()
	return up, down
}

// A UDP flow: datagrams from one peer on the proxy port (one client socket
// and destination), relayed through a socket connected to the destination.
type udpFlow struct {
	peer     netip.AddrPort // as the proxy socket reports it
	origin   redirector.Origin
	upstream *net.UDPConn
	start    time.Time
	last     atomic.Int64 // UnixNano of the last datagram either way
	up, down atomic.Uint64
}

// serveUDP reads datagrams until the socket closes.
func (p *proxy) serveUDP(pc *net.UDPConn) {
	local := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	buf := make([]byte, 65535)
	for {
		n, peer, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // e.g. an ICMP error reported on the socket
		}
		f := p.udpFlowFor(pc, local, peer)
		if f == nil {
			continue
		}
		if _, err := f.upstream.Write(buf[:n]); err == nil {
			f.up.Add(uint64(n))
			f.last.Store(time.Now().UnixNano())
		}
	}
}

// udpFlowFor finds or makes the flow of a peer; nil drops the datagram.
func (p *proxy) udpFlowFor(pc *net.UDPConn, local, peer netip.AddrPort) *udpFlow {
	p.mu.Lock()
	f := p.flows[peer]
	p.mu.Unlock()
	if f != nil {
		return f
	}
	o, err := p.lookup.LookupAddrPort(redirector.UDP, local, peer)
	if err != nil {
		if p.udpUnknown.Add(1) <= 5 {
			p.printf("%s  UDP  a datagram from %s was not redirected: dropped\n", time.Now().Format("15:04:05"), peer)
		}
		return nil
	}
	upstream, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(o.Destination))
	if err != nil {
		p.udpFailed.Add(1)
		p.line("UDP", o, 0, 0, 0, "failed: "+shortErr(err))
		return nil
	}
	f = &udpFlow{peer: peer, origin: o, upstream: upstream, start: time.Now()}
	f.last.Store(time.Now().UnixNano())
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		upstream.Close()
		return nil
	}
	p.flows[peer] = f
	p.mu.Unlock()
	p.udpCount.Add(1)
	p.wg.Add(1)
	go p.udpReplies(pc, f)
	return f
}

// udpReplies relays the destination's datagrams back to the client until
// the flow has been idle for udpIdle or the proxy stops.
func (p *proxy) udpReplies(pc *net.UDPConn, f *udpFlow) {
	defer p.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, ok := p.udpRead(f, buf)
		if !ok {
			break
		}
		if _, err := pc.WriteToUDPAddrPort(buf[:n], f.peer); err == nil {
			f.down.Add(uint64(n))
			f.last.Store(time.Now().UnixNano())
		}
	}
	p.mu.Lock()
	if p.flows[f.peer] == f {
		delete(p.flows, f.peer)
	}
	p.mu.Unlock()
	f.upstream.Close()
	up, down := f.up.Load(), f.down.Load()
	p.bytesUp.Add(up)
	p.bytesDown.Add(down)
	p.line("UDP", f.origin, up, down, time.Unix(0, f.last.Load()).Sub(f.start), "")
}

// udpRead reads the next reply; false when the flow is over (idle, or the
// proxy stopped).
func (p *proxy) udpRead(f *udpFlow, buf []byte) (int, bool) {
	for {
		f.upstream.SetReadDeadline(time.Unix(0, f.last.Load()).Add(p.udpIdle))
		n, err := f.upstream.Read(buf)
		if err == nil {
			return n, true
		}
		var ne net.Error
		timeout := errors.As(err, &ne) && ne.Timeout()
		switch {
		case errors.Is(err, net.ErrClosed):
			return 0, false
		case timeout && time.Since(time.Unix(0, f.last.Load())) >= p.udpIdle:
			return 0, false
		}
		// A datagram went up meanwhile, or an ICMP error (port
		// unreachable) was reported: the flow goes on until idle.
	}
}

// shutdown stops accepting and ends every connection and flow.
func (p *proxy) shutdown(tcp tcpListener, udp *net.UDPConn) {
	if tcp != nil {
		tcp.Close()
	}
	if udp != nil {
		udp.Close()
	}
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	for _, f := range p.flows {
		f.upstream.Close()
	}
	p.mu.Unlock()
}

func (p *proxy) wait() { p.wg.Wait() }

// statser is the part of *redirector.Redirector the summary uses.
type statser interface {
	Stats() (redirector.Stats, error)
}

func (p *proxy) summary(s statser) {
	p.printf("\nsummary: %d TCP connection%s (%d failed), %d UDP flow%s (%d failed); %s up, %s down",
		p.tcpCount.Load(), plural(p.tcpCount.Load()), p.tcpFailed.Load(),
		p.udpCount.Load(), plural(p.udpCount.Load()), p.udpFailed.Load(),
		humanBytes(p.bytesUp.Load()), humanBytes(p.bytesDown.Load()))
	n := uint64(p.notRedirected.Load() + p.udpUnknown.Load())
	if p.refused != nil {
		n += p.refused()
	}
	if n > 0 {
		p.printf("; %d not redirected (refused)", n)
	}
	p.printf("\n")
	if s == nil {
		return
	}
	if st, err := s.Stats(); err == nil {
		p.printf("library: %d packets seen, %d rewritten, %d connections redirected, %d passed, %d lookups (%d missed)\n",
			st.Packets, st.Rewritten, st.FlowsRedirected, st.FlowsPassed, st.Lookups, st.LookupMisses)
	}
}

func (p *proxy) printEvents(events <-chan redirector.Event) {
	for ev := range events {
		p.printf("%s  event %-6s flow %d  %s %s (%d) -> %s  up %s  down %s\n", time.Now().Format("15:04:05"),
			ev.Type, ev.FlowID, strings.ToUpper(ev.Protocol.String()), procName(ev.Process), ev.PID,
			ev.Destination, humanBytes(ev.BytesUp), humanBytes(ev.BytesDown))
	}
}

// procName is the executable's file name, from a Windows or POSIX path.
func procName(path string) string {
	if path == "" {
		return "?"
	}
	if i := strings.LastIndexAny(path, `/\`); i >= 0 {
		return path[i+1:]
	}
	return path
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

func plural(n int64) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// shortErr drops the "dial tcp 1.2.3.4:80: " prefix net errors repeat.
func shortErr(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		var se *os.SyscallError
		if errors.As(oe.Err, &se) {
			return se.Err.Error()
		}
		return oe.Err.Error()
	}
	return err.Error()
}
