package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	redirector "windows-redirector/go/redirector"
	"windows-redirector/go/redirector/internal/syncbuf"
)

// fakeLookup answers like the library would for redirected connections: the
// proxy's relaying is tested on loopback, without a capture backend.
type fakeLookup struct {
	origin redirector.Origin
	err    error
	mu     sync.Mutex
	asked  []netip.AddrPort // the peers looked up
}

func (f *fakeLookup) Lookup(c net.Conn) (redirector.Origin, error) {
	f.mu.Lock()
	f.asked = append(f.asked, c.RemoteAddr().(*net.TCPAddr).AddrPort())
	f.mu.Unlock()
	return f.origin, f.err
}

func (f *fakeLookup) LookupAddrPort(p redirector.Protocol, local, peer netip.AddrPort) (redirector.Origin, error) {
	f.mu.Lock()
	f.asked = append(f.asked, peer)
	f.mu.Unlock()
	return f.origin, f.err
}

// lookedUp is a plain listener whose connections the stand-in lookup
// answers for, as the package's Listener does with the library's.
type lookedUp struct {
	net.Listener
	f *fakeLookup
}

func (l lookedUp) acceptTCP() (accepted, error) {
	c, err := l.Accept()
	if err != nil {
		return accepted{}, err
	}
	o, err := l.f.Lookup(c)
	return accepted{c, o, err}, nil
}

// syncBuffer is the proxy's output, read while the proxy writes.
type syncBuffer struct{ syncbuf.Buffer }

func (b *syncBuffer) waitFor(t *testing.T, re string) string {
	t.Helper()
	m := b.WaitFor(regexp.MustCompile(re), 5*time.Second)
	if m == "" {
		t.Fatalf("output never matched %q:\n%s", re, b.String())
	}
	return m
}

// tcpEcho serves "echo:" + what it read, then closes its side.
func tcpEcho(t *testing.T) netip.AddrPort {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				data, _ := io.ReadAll(c)
				c.Write(append([]byte("echo:"), data...))
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// startProxy serves TCP and UDP on loopback with a stand-in lookup.
func startProxy(t *testing.T, f *fakeLookup, udpIdle time.Duration) (*proxy, *syncBuffer, net.Listener, *net.UDPConn) {
	out := &syncBuffer{}
	p := newProxy(f, out, udpIdle)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p.serve(lookedUp{ln, f}, pc)
	t.Cleanup(func() {
		p.shutdown(lookedUp{ln, f}, pc)
		p.wait()
	})
	return p, out, ln, pc
}

// dialProxy connects to the proxy's TCP port; reads give up after 5 s.
func dialProxy(t *testing.T, ln net.Listener) net.Conn {
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	return c
}

func TestRelayTCP(t *testing.T) {
	dest := tcpEcho(t)
	f := &fakeLookup{origin: redirector.Origin{Destination: dest, PID: 4242, Process: "/usr/bin/curl",
		Protocol: redirector.TCP}}
	p, out, ln, _ := startProxy(t, f, time.Second)

	payload := make([]byte, 200<<10)
	rand.Read(payload)
	c := dialProxy(t, ln)
	go func() {
		c.Write(payload)
		c.(*net.TCPConn).CloseWrite() // the proxy must pass the end of data on
	}()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, append([]byte("echo:"), payload...)) {
		t.Fatalf("round trip: %d bytes, %v", len(got), err)
	}
	line := out.waitFor(t, `(?m)^\d\d:\d\d:\d\d  TCP  curl \(4242\) +-> `+regexp.QuoteMeta(dest.String())+
		` +up +200\.0 KiB  down +200\.0 KiB  \d+\.\d\d s$`)
	t.Logf("line: %s", line)
	if len(f.asked) != 1 || f.asked[0] != c.LocalAddr().(*net.TCPAddr).AddrPort() {
		t.Fatalf("looked up %v, want the client's address %v", f.asked, c.LocalAddr())
	}
	p.summary(nil)
	out.waitFor(t, `summary: 1 TCP connection \(0 failed\), 0 UDP flows \(0 failed\); 200\.0 KiB up, 200\.0 KiB down\n`)
}

func TestTCPNotRedirected(t *testing.T) {
	f := &fakeLookup{err: redirector.ErrNotFound}
	p, out, ln, _ := startProxy(t, f, time.Second)
	c := dialProxy(t, ln)
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("a connection that was not redirected should be closed: %d %v", n, err)
	}
	out.waitFor(t, regexp.QuoteMeta(c.LocalAddr().String())+` connected to the proxy port directly \(not redirected\): closed`)
	p.summary(nil)
	out.waitFor(t, `summary: 0 TCP connections \(0 failed\).*; 1 not redirected \(refused\)`)
}

func TestTCPDialFailure(t *testing.T) {
	ln0, _ := net.Listen("tcp", "127.0.0.1:0")
	dest := ln0.Addr().(*net.TCPAddr).AddrPort()
	ln0.Close() // nothing listens there now
	f := &fakeLookup{origin: redirector.Origin{Destination: dest, PID: 7, Process: `C:\Tools\app.exe`}}
	p, out, ln, _ := startProxy(t, f, time.Second)
	c := dialProxy(t, ln)
	io.ReadAll(c)
	out.waitFor(t, `TCP  app\.exe \(7\) +-> `+regexp.QuoteMeta(dest.String())+` +up +0 B  down +0 B  failed: \S+`)
	if p.tcpFailed.Load() != 1 {
		t.Fatalf("failed count %d", p.tcpFailed.Load())
	}
}

// A client that keeps its connection open is closed at shutdown, and its
// line is printed before the summary.
func TestShutdownEndsConnections(t *testing.T) {
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	go func() {
		c, err := up.Accept()
		if err == nil {
			io.Copy(c, c) // echoes and never closes first
		}
	}()
	f := &fakeLookup{origin: redirector.Origin{Destination: up.Addr().(*net.TCPAddr).AddrPort(), PID: 9, Process: "/bin/nc"}}
	out := &syncBuffer{}
	p := newProxy(f, out, time.Second)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	p.serve(lookedUp{ln, f}, nil)
	c := dialProxy(t, ln)
	c.Write([]byte("hello"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	done := make(chan struct{})
	go func() {
		p.shutdown(lookedUp{ln, f}, nil)
		p.wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown did not end an open connection")
	}
	out.waitFor(t, `TCP  nc \(9\) .* up +5 B  down +5 B`)
}

// udpEcho answers each datagram with "re:" + it.
func udpEcho(t *testing.T) netip.AddrPort {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			pc.WriteToUDPAddrPort(append([]byte("re:"), buf[:n]...), from)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

func TestRelayUDP(t *testing.T) {
	dest := udpEcho(t)
	f := &fakeLookup{origin: redirector.Origin{Destination: dest, PID: 53, Process: "/usr/bin/dig",
		Protocol: redirector.UDP}}
	p, out, _, pc := startProxy(t, f, 300*time.Millisecond)
	// Two clients: two flows, each with its replies.
	for i, name := range []string{"a", "b"} {
		c, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for j := 0; j < 3; j++ {
			msg := fmt.Sprintf("%s%d", name, j)
			c.Write([]byte(msg))
			buf := make([]byte, 64)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Read(buf)
			if err != nil || string(buf[:n]) != "re:"+msg {
				t.Fatalf("client %d datagram %d: %q %v", i, j, buf[:n], err)
			}
		}
	}
	if p.udpCount.Load() != 2 || len(f.asked) != 2 {
		t.Fatalf("%d flows, %d lookups; want 2 and 2 (one per flow)", p.udpCount.Load(), len(f.asked))
	}
	// Idle flows end with a line each: 3 datagrams of 2 bytes up, 5 down.
	out.waitFor(t, `(?s)UDP  dig \(53\) +-> `+regexp.QuoteMeta(dest.String())+` +up +6 B  down +15 B.*`+
		`UDP  dig \(53\) .* up +6 B  down +15 B`)
	p.mu.Lock()
	left := len(p.flows)
	p.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d flows left after the idle timeout", left)
	}
}

func TestUDPNotRedirectedIsDropped(t *testing.T) {
	f := &fakeLookup{err: redirector.ErrNotFound}
	p, out, _, pc := startProxy(t, f, time.Second)
	c, _ := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
	defer c.Close()
	c.Write([]byte("x"))
	out.waitFor(t, `UDP  a datagram from 127\.0\.0\.1:\d+ was not redirected: dropped`)
	if p.udpCount.Load() != 0 || p.udpUnknown.Load() != 1 {
		t.Fatalf("flows %d unknown %d", p.udpCount.Load(), p.udpUnknown.Load())
	}
}

func TestParseArgs(t *testing.T) {
	c, err := parseArgs([]string{"--port", "9000", "--pid", "12,34", "--pid", "56", "--process", "curl",
		"--process", "!wget,*\\chrome.exe", "--protocols", "TCP", "--tree", "78,90"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.port != 9000 || fmt.Sprint(c.pids) != "[12 34 56]" || fmt.Sprint(c.trees) != "[78 90]" || strings.Join(c.processes, "|") != `curl|!wget|*\chrome.exe` ||
		len(c.protocols) != 1 || c.protocols[0] != redirector.TCP || c.udpIdle != time.Minute {
		t.Fatalf("parsed %+v", c)
	}
	for _, bad := range [][]string{
		{},
		{"--pid", "x"},
		{"--pid", "-3"},
		{"--tree", "x"},
		{"--tree", "0"},
		{"--port", "0", "--pid", "1"},
		{"--port", "70000", "--pid", "1"},
		{"--pid", "1", "--protocols", "sctp"},
		{"--pid", "1", "extra"},
		{"--pid", "1", "--udp-idle", "0s"},
	} {
		if _, err := parseArgs(bad, io.Discard); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	var stderr bytes.Buffer
	if rc := run([]string{"--pid", "nope"}, io.Discard, &stderr); rc != 2 || !strings.Contains(stderr.String(), `--pid "nope"`) {
		t.Fatalf("run with a bad flag: %d %q", rc, stderr.String())
	}
	if rc := run([]string{"--help"}, io.Discard, io.Discard); rc != 0 {
		t.Fatalf("--help: %d", rc)
	}
}

// Without WinDivert (a folder without it), the program says so and what to
// do, and exits 1. On Linux: a port already in use is reported the same way.
func TestRunReportsStartFailure(t *testing.T) {
	busy, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port
	var stderr bytes.Buffer
	if runtime.GOOS == "windows" {
		busy.Close()
		rc := run([]string{"--port", fmt.Sprint(port), "--process", "curl", "--windivert", t.TempDir()}, io.Discard, &stderr)
		if rc != 1 || !strings.Contains(stderr.String(), "WinDivert driver not found") ||
			!strings.Contains(stderr.String(), "run as Administrator") {
			t.Fatalf("run without WinDivert: %d %q", rc, stderr.String())
		}
		return
	}
	rc := run([]string{"--port", fmt.Sprint(port), "--process", "curl"}, io.Discard, &stderr)
	if rc != 1 || !strings.Contains(stderr.String(), "address already in use") {
		t.Fatalf("run on a busy port: %d %q", rc, stderr.String())
	}
}

func TestFormatting(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB",
		5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
	for path, want := range map[string]string{"/usr/bin/curl": "curl", `C:\Windows\System32\svchost.exe`: "svchost.exe",
		"": "?", "plain": "plain"} {
		if got := procName(path); got != want {
			t.Errorf("procName(%q) = %q, want %q", path, got, want)
		}
	}
	if got := describeTargets([]int{1, 2}, []int{3}, []string{"curl", "!wget"}); got !=
		"PID 1, PID 2, PID 3 and its descendants, curl, !wget" {
		t.Errorf("describeTargets: %q", got)
	}
	if err := shortErr(&net.OpError{Op: "dial", Err: errors.New("refused")}); err != "refused" {
		t.Errorf("shortErr: %q", err)
	}
}
