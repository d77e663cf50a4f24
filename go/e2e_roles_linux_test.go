//go:build cgo && linux && e2e

package redirector

// The roles of the end-to-end tests' helper processes (see e2e_linux_test.go).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"windows-redirector/go/redirector/internal/syncbuf"
)

func runRole(role string) int {
	switch role {
	case "server":
		return roleServer()
	case "client":
		return roleClient()
	case "scenario-package":
		return scenarioPackage()
	case "scenario-example":
		return scenarioExample()
	}
	fmt.Fprintf(os.Stderr, "unknown role %q\n", role)
	return 2
}

// ---------------------------------------------------------------------------
// The "internet" server: every reply starts with "from=<the peer it saw>".

func roleServer() int {
	for _, ip := range []string{e2eServer4, e2eServer6} {
		tcp, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(e2eTCPPort)))
		if err != nil {
			fmt.Println("server:", err)
			return 1
		}
		go serveEcho(tcp)
		web, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(e2eHTTPPort)))
		if err != nil {
			fmt.Println("server:", err)
			return 1
		}
		go http.Serve(web, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "from=%s\n", r.RemoteAddr)
		}))
		udp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), e2eUDPPort)))
		if err != nil {
			fmt.Println("server:", err)
			return 1
		}
		go func() {
			buf := make([]byte, 65535)
			for {
				n, from, err := udp.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				udp.WriteToUDPAddrPort(append([]byte("from="+from.String()+"\n"), buf[:n]...), from)
			}
		}()
	}
	fmt.Println("ready")
	select {} // until the test kills it
}

// serveEcho answers "from=<peer>\n" and all the client sent, after its end of data.
func serveEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			data, _ := io.ReadAll(c)
			c.Write(append([]byte("from="+c.RemoteAddr().String()+"\n"), data...))
		}()
	}
}

// ---------------------------------------------------------------------------
// The client: waits for a line on stdin (so its PID can be configured
// first), then talks to WR_E2E_DST and reports what it saw.

type clientResult struct {
	Local    string // its own address
	From     string // the address the server saw
	Sent     int
	Received int
	DataOK   bool
	Err      string
}

func roleClient() int {
	bufio.NewReader(os.Stdin).ReadString('\n')
	network, dst := os.Getenv("WR_E2E_NET"), os.Getenv("WR_E2E_DST")
	size, _ := strconv.Atoi(os.Getenv("WR_E2E_SIZE"))
	var res clientResult
	var err error
	if network == "udp" {
		err = udpClient(dst, size, &res)
	} else {
		err = tcpClient(dst, size, &res)
	}
	if err != nil {
		res.Err = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// splitReply checks a server reply against what was sent.
func splitReply(reply, sent []byte, res *clientResult) error {
	head, data, ok := bytes.Cut(reply, []byte("\n"))
	if !ok || !bytes.HasPrefix(head, []byte("from=")) {
		return fmt.Errorf("unexpected reply %q", reply[:min(len(reply), 64)])
	}
	res.From = string(head[len("from="):])
	res.DataOK = bytes.Equal(data, sent)
	return nil
}

func min(a, b int) int {
	if a < b {
		return a
	}
	return b
}

func tcpClient(dst string, size int, res *clientResult) error {
	c, err := net.DialTimeout("tcp", dst, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	res.Local = c.LocalAddr().String()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	payload := make([]byte, size)
	rand.Read(payload)
	go func() {
		n, _ := c.Write(payload)
		res.Sent = n
		c.(*net.TCPConn).CloseWrite()
	}()
	reply, err := io.ReadAll(c)
	res.Received = len(reply)
	if err != nil {
		return err
	}
	return splitReply(reply, payload, res)
}

func udpClient(dst string, size int, res *clientResult) error {
	c, err := net.Dial("udp", dst)
	if err != nil {
		return err
	}
	defer c.Close()
	res.Local = c.LocalAddr().String()
	res.DataOK = true
	buf := make([]byte, 65535)
	for i := 0; i < 3; i++ {
		payload := make([]byte, size)
		rand.Read(payload)
		n, err := c.Write(payload)
		res.Sent += n
		if err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err = c.Read(buf)
		if err != nil {
			return fmt.Errorf("datagram %d: %w", i+1, err)
		}
		res.Received += n
		var one clientResult
		if err := splitReply(buf[:n], payload, &one); err != nil {
			return err
		}
		res.From, res.DataOK = one.From, res.DataOK && one.DataOK
	}
	return nil
}

// startClient starts this binary as a client that waits to be told to go.
type waitingClient struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   bytes.Buffer
	pid   int
}

// startClient starts it in this namespace, or in namespace ns.
func startClient(ns, network, dst string, size int) (*waitingClient, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	w := &waitingClient{cmd: exec.Command(exe, "-test.run=^$")}
	if ns != "" {
		w.cmd = exec.Command("ip", "netns", "exec", ns, exe, "-test.run=^$")
	}
	w.cmd.Env = append(os.Environ(), e2eRoleEnv+"=client", "WR_E2E_NET="+network, "WR_E2E_DST="+dst,
		"WR_E2E_SIZE="+strconv.Itoa(size))
	w.cmd.Stdout = &w.out
	w.cmd.Stderr = os.Stderr
	if w.stdin, err = w.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := w.cmd.Start(); err != nil {
		return nil, err
	}
	w.pid = w.cmd.Process.Pid
	return w, nil
}

// run tells it to go and waits for its result.
func (w *waitingClient) run() clientResult {
	w.stdin.Write([]byte("go\n"))
	w.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- w.cmd.Wait() }()
	select {
	case err := <-done:
		var res clientResult
		if jerr := json.Unmarshal(w.out.Bytes(), &res); jerr != nil {
			return clientResult{Err: fmt.Sprintf("client exited (%v) without a result: %q", err, w.out.String())}
		}
		return res
	case <-time.After(30 * time.Second):
		w.cmd.Process.Kill()
		<-done
		return clientResult{Err: "the client did not finish in 30 s"}
	}
}

// ---------------------------------------------------------------------------
// The package scenario: a proxy made with this package, and its checks.

var packageChecks = []string{
	"tcp4_by_pid", "tcp6_by_pid", "udp4_by_pid", "udp6_by_pid",
	"tcp4_curl_by_name", "tcp6_curl_by_name",
	"intercept_all_but_the_proxy_no_loop", "not_intercepted_goes_direct", "direct_from_another_machine_refused",
	"events_opened_and_closed_with_bytes", "stats_count_the_redirects", "app_port_past_the_limit_keeps_the_old",
}

func report(check string, failures []string, note string) {
	r := e2eResult{Check: check, OK: len(failures) == 0, Detail: note}
	if len(failures) > 0 {
		r.Detail = strings.Join(failures, "; ")
	}
	b, _ := json.Marshal(r)
	fmt.Println(e2eResultTag + string(b))
}

type scenario struct {
	r        *Redirector
	ln       *Listener
	port     uint16
	self     string       // this binary's file name: the Go clients' process name
	accepted atomic.Int64 // connections the listener returned

	mu       sync.Mutex
	origins  []Origin          // every connection and UDP flow the proxy received
	upstream map[uint32]string // flow ID -> the proxy's own address towards the destination
	events   []Event
}

func scenarioPackage() int {
	s, err := newScenario()
	if err != nil {
		fmt.Println("scenario:", err)
		return 1
	}
	defer s.r.Close()
	v4 := func(port int) string { return net.JoinHostPort(e2eServer4, strconv.Itoa(port)) }
	v6 := func(port int) string { return net.JoinHostPort(e2eServer6, strconv.Itoa(port)) }
	byPID := func(pid int) Options { return Options{AppPort: s.port, PIDs: []int{pid}} }

	var tcp4 Origin
	var tcp4Res clientResult
	tcp4, tcp4Res = s.checkGoClient("tcp4_by_pid", "tcp", v4(e2eTCPPort), 256<<10, byPID, true)
	s.checkGoClient("tcp6_by_pid", "tcp", v6(e2eTCPPort), 256<<10, byPID, true)
	s.checkGoClient("udp4_by_pid", "udp", v4(e2eUDPPort), 1200, byPID, true)
	s.checkGoClient("udp6_by_pid", "udp", v6(e2eUDPPort), 1200, byPID, true)
	s.checkCurl("tcp4_curl_by_name", v4(e2eHTTPPort))
	s.checkCurl("tcp6_curl_by_name", v6(e2eHTTPPort))
	s.checkGoClient("intercept_all_but_the_proxy_no_loop", "tcp", v4(e2eTCPPort), 64<<10, func(int) Options {
		return Options{AppPort: s.port, Intercept: []string{"!no-such-program"}}
	}, true)
	s.checkGoClient("not_intercepted_goes_direct", "tcp", v4(e2eTCPPort), 64<<10, func(int) Options {
		return Options{AppPort: s.port, Intercept: []string{"curl"}}
	}, false)
	s.checkDirectRefused("direct_from_another_machine_refused")
	s.checkEvents("events_opened_and_closed_with_bytes", tcp4, tcp4Res)
	s.checkStats("stats_count_the_redirects", 7)
	s.checkAppPortLimit("app_port_past_the_limit_keeps_the_old")
	return 0
}

func newScenario() (*scenario, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	r, err := New(Options{})
	if err != nil {
		return nil, err
	}
	s := &scenario{r: r, self: filepath.Base(exe), upstream: map[uint32]string{}}
	ln, err := r.Listen("tcp", ":0") // the wildcard address: reachable from the other namespace
	if err != nil {
		return nil, err
	}
	s.ln, s.port = ln, ln.Port()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{Port: int(s.port)})
	if err != nil {
		return nil, err
	}
	if err := r.SetAppPort(s.port); err != nil {
		return nil, err
	}
	if err := r.Start(context.Background()); err != nil {
		return nil, err
	}
	go func() {
		for ev := range r.Events(context.Background()) {
			s.mu.Lock()
			s.events = append(s.events, ev)
			s.mu.Unlock()
		}
	}()
	go s.serveTCP(ln)
	go s.serveUDP(udp)
	return s, nil
}

func (s *scenario) record(o Origin, upstream net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.origins = append(s.origins, o)
	s.upstream[o.FlowID] = upstream.LocalAddr().String()
}

func (s *scenario) serveTCP(ln *Listener) {
	for {
		c, err := ln.AcceptRedirected()
		if err != nil {
			return
		}
		s.accepted.Add(1)
		go func() {
			defer c.Close()
			o := c.Origin()
			up, err := net.DialTimeout("tcp", o.Destination.String(), 5*time.Second)
			if err != nil {
				s.record(o, c) // seen, though the relay failed
				return
			}
			defer up.Close()
			s.record(o, up)
			done := make(chan struct{})
			go func() {
				io.Copy(up, c)
				up.(*net.TCPConn).CloseWrite()
				close(done)
			}()
			io.Copy(c, up)
			c.CloseWrite()
			<-done
		}()
	}
}

func (s *scenario) serveUDP(pc *net.UDPConn) {
	local := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	flows := map[netip.AddrPort]*net.UDPConn{}
	buf := make([]byte, 65535)
	for {
		n, peer, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		up := flows[peer]
		if up == nil {
			o, err := s.r.LookupAddrPort(UDP, local, peer)
			if err != nil {
				continue
			}
			if up, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(o.Destination)); err != nil {
				continue
			}
			flows[peer] = up
			s.record(o, up)
			go func(up *net.UDPConn, peer netip.AddrPort) {
				b := make([]byte, 65535)
				for {
					n, err := up.Read(b)
					if err != nil {
						return
					}
					pc.WriteToUDPAddrPort(b[:n], peer)
				}
			}(up, peer)
		}
		up.Write(buf[:n])
	}
}

// since returns the origins recorded after the first `from` ones.
func (s *scenario) since(from int) []Origin {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Origin(nil), s.origins[from:]...)
}

func (s *scenario) mark() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.origins)
}

// notObserved explains a missing redirect with what the library counted.
func (s *scenario) notObserved(res clientResult, others []Origin) string {
	st, _ := s.r.Stats()
	how := "the server saw the client at " + res.From
	if res.From == res.Local {
		how += ", its own address: it went direct"
	}
	return fmt.Sprintf("redirection was not observed: no redirected connection of the client reached the proxy "+
		"(%d others did); %s. Library: %d packets seen, %d rewritten, %d connections redirected, %d lookups",
		len(others), how, st.Packets, st.Rewritten, st.FlowsRedirected, st.Lookups)
}

// expectRedirected checks a client's connection went through the proxy with
// the right Origin.
func (s *scenario) expectRedirected(o *Origin, found bool, proto Protocol, dst string, pid int, process string,
	res clientResult, others []Origin) []string {
	if !found {
		return []string{s.notObserved(res, others)}
	}
	var f []string
	if o.Destination.String() != dst {
		f = append(f, fmt.Sprintf("Origin.Destination %s, want %s", o.Destination, dst))
	}
	if o.Protocol != proto || o.Direction != Outbound {
		f = append(f, fmt.Sprintf("Origin.Protocol %v Direction %v, want %v outbound", o.Protocol, o.Direction, proto))
	}
	if filepath.Base(o.Process) != process {
		f = append(f, fmt.Sprintf("Origin.Process %q, want .../%s", o.Process, process))
	}
	if local, err := netip.ParseAddrPort(res.Local); err != nil || o.Client != local {
		f = append(f, fmt.Sprintf("Origin.Client %s, want the client's own address %s", o.Client, res.Local))
	}
	if o.AppPort != s.port || o.FlowID == 0 {
		f = append(f, fmt.Sprintf("Origin.AppPort %d (want %d), FlowID %d", o.AppPort, s.port, o.FlowID))
	}
	s.mu.Lock()
	up := s.upstream[o.FlowID]
	s.mu.Unlock()
	if res.From != up || res.From == res.Local {
		f = append(f, fmt.Sprintf("the server saw the client at %s, want the proxy's own connection %s", res.From, up))
	}
	if !res.DataOK || res.Err != "" {
		f = append(f, fmt.Sprintf("data did not round-trip (sent %d, received %d): %s", res.Sent, res.Received, res.Err))
	}
	return f
}

func findPID(origins []Origin, pid int) (*Origin, bool) {
	for i := range origins {
		if origins[i].PID == pid {
			return &origins[i], true
		}
	}
	return nil, false
}

// checkGoClient runs this binary as a client under the configuration opts
// gives for its PID, and checks it went through the proxy (or, when
// wantRedirect is false, directly).
func (s *scenario) checkGoClient(check, network, dst string, size int, opts func(pid int) Options,
	wantRedirect bool) (Origin, clientResult) {
	proto := TCP
	if network == "udp" {
		proto = UDP
	}
	w, err := startClient("", network, dst, size)
	if err != nil {
		report(check, []string{err.Error()}, "")
		return Origin{}, clientResult{}
	}
	if err := s.r.SetConfig(opts(w.pid)); err != nil {
		w.cmd.Process.Kill()
		w.cmd.Wait()
		report(check, []string{err.Error()}, "")
		return Origin{}, clientResult{}
	}
	from := s.mark()
	res := w.run()
	time.Sleep(200 * time.Millisecond) // a UDP flow is recorded as its first datagram passes
	got := s.since(from)
	o, found := findPID(got, w.pid)
	if !wantRedirect {
		var f []string
		if found {
			f = append(f, fmt.Sprintf("the proxy received the client's connection: %+v", *o))
		}
		if res.From != res.Local || res.Local == "" || !res.DataOK || res.Err != "" {
			f = append(f, fmt.Sprintf("the server saw %s, want the client's own %s; data ok %v; %s",
				res.From, res.Local, res.DataOK, res.Err))
		}
		report(check, f, "")
		return Origin{}, res
	}
	for _, other := range got {
		if other.PID == os.Getpid() {
			report(check, []string{"the proxy's own connection was intercepted (a loop)"}, "")
			return Origin{}, res
		}
	}
	f := s.expectRedirected(o, found, proto, dst, w.pid, s.self, res, got)
	if found {
		report(check, f, fmt.Sprintf("%s -> %s, PID %d %s", o.Client, o.Destination, o.PID, o.Process))
		return *o, res
	}
	report(check, f, "")
	return Origin{}, res
}

// checkCurl runs curl, intercepted by name, against http://dst/.
func (s *scenario) checkCurl(check, dst string) {
	if err := s.r.SetConfig(Options{AppPort: s.port, Intercept: []string{"curl"}}); err != nil {
		report(check, []string{err.Error()}, "")
		return
	}
	from := s.mark()
	cmd := exec.Command("curl", "-sS", "-g", "-m", "15", "-w", `%{local_ip} %{local_port}`, "http://"+dst+"/")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	var res clientResult
	if err := cmd.Start(); err != nil {
		report(check, []string{err.Error()}, "")
		return
	}
	if err := cmd.Wait(); err != nil {
		res.Err = fmt.Sprintf("curl: %v: %s", err, out.String())
	}
	// Output: "from=<peer>\n<local ip> <local port>"
	if body, tail, ok := strings.Cut(out.String(), "\n"); ok && strings.HasPrefix(body, "from=") {
		res.From = strings.TrimPrefix(body, "from=")
		if f := strings.Fields(tail); len(f) == 2 {
			port, _ := strconv.Atoi(f[1])
			if a, err := netip.ParseAddr(f[0]); err == nil {
				res.Local = netip.AddrPortFrom(a, uint16(port)).String()
			}
		}
		res.DataOK = true
	} else if res.Err == "" {
		res.Err = fmt.Sprintf("unexpected curl output %q", out.String())
	}
	got := s.since(from)
	o, found := findPID(got, cmd.Process.Pid)
	f := s.expectRedirected(o, found, TCP, dst, cmd.Process.Pid, "curl", res, got)
	report(check, f, "")
}

// directClient connects from the other namespace ("another machine") to
// addr, sends data and its end of data, and reports what came back.
func directClient(addr string) clientResult {
	w, err := startClient(os.Getenv(e2eOtherNSEnv), "tcp", addr, 1000)
	if err != nil {
		return clientResult{Err: err.Error()}
	}
	return w.run()
}

// directRefused says what is wrong when a direct client was served, or
// could not even connect.
func directRefused(addr string, res clientResult) []string {
	if res.Local == "" {
		return []string{fmt.Sprintf("%s: the direct client did not connect: %s", addr, res.Err)}
	}
	if res.From != "" || res.Received != 0 {
		return []string{fmt.Sprintf("%s: the direct client was served: %d bytes back, %q", addr, res.Received, res.From)}
	}
	return nil
}

// checkDirectRefused: connections to the proxy's port from the other
// namespace, over IPv4 and IPv6, are closed unserved; Accept never returns
// them, and the listener counts them.
func (s *scenario) checkDirectRefused(check string) {
	accepted, refused := s.accepted.Load(), s.ln.Refused()
	var f []string
	for _, host := range []string{e2eClient4, e2eClient6} {
		addr := net.JoinHostPort(host, strconv.Itoa(int(s.port)))
		f = append(f, directRefused(addr, directClient(addr))...)
	}
	deadline := time.Now().Add(3 * time.Second)
	for s.ln.Refused() < refused+2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := s.ln.Refused() - refused; got != 2 {
		f = append(f, fmt.Sprintf("Listener.Refused counted %d of the 2 direct connections", got))
	}
	if got := s.accepted.Load() - accepted; got != 0 {
		f = append(f, fmt.Sprintf("Accept returned %d direct connections", got))
	}
	report(check, f, "")
}

func (s *scenario) checkEvents(check string, o Origin, res clientResult) {
	if o.FlowID == 0 {
		report(check, []string{"no redirected connection to follow (tcp4_by_pid failed)"}, "")
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	var opened, closed *Event
	for time.Now().Before(deadline) && closed == nil {
		s.mu.Lock()
		for i := range s.events {
			ev := s.events[i]
			if ev.FlowID == o.FlowID && ev.Type == EventOpened {
				opened = &ev
			}
			if ev.FlowID == o.FlowID && ev.Type == EventClosed {
				closed = &ev
			}
		}
		s.mu.Unlock()
		time.Sleep(50 * time.Millisecond)
	}
	var f []string
	if opened == nil || opened.PID != o.PID || opened.Destination != o.Destination {
		f = append(f, fmt.Sprintf("no matching opened event for flow %d: %+v", o.FlowID, opened))
	}
	if closed == nil {
		f = append(f, fmt.Sprintf("no closed event for flow %d within 10 s", o.FlowID))
	} else if closed.BytesUp != uint64(res.Sent) || closed.BytesDown != uint64(res.Received) {
		f = append(f, fmt.Sprintf("closed event bytes up %d down %d, want %d and %d", closed.BytesUp,
			closed.BytesDown, res.Sent, res.Received))
	}
	if opened != nil && closed != nil && closed.Time < opened.Time {
		f = append(f, "closed before opened")
	}
	report(check, f, "")
}

func (s *scenario) checkStats(check string, redirected uint64) {
	st, err := s.r.Stats()
	var f []string
	if err != nil {
		f = append(f, err.Error())
	}
	if !st.Running || st.FlowsRedirected < redirected || st.Lookups < redirected || st.Rewritten == 0 {
		f = append(f, fmt.Sprintf("want at least %d redirected connections and lookups: %+v", redirected, st))
	}
	report(check, f, "")
}

// checkAppPortLimit: a run takes 16 app ports (s.port and 15 more); the 17th
// is refused with ErrInit and the port in force stays.
func (s *scenario) checkAppPortLimit(check string) {
	var f []string
	for p := uint16(1); p <= 15; p++ {
		if err := s.r.SetAppPort(s.port + p); err != nil {
			f = append(f, err.Error())
		}
	}
	err := s.r.SetAppPort(s.port + 16)
	if !errors.Is(err, ErrInit) || !strings.Contains(err.Error(), "too many app ports") {
		f = append(f, fmt.Sprintf("17th port: %v; want ErrInit naming the limit", err))
	}
	if got := s.r.Options().AppPort; got != s.port+15 {
		f = append(f, fmt.Sprintf("Options().AppPort is %d after the refusal; want %d", got, s.port+15))
	}
	report(check, f, "")
}

// ---------------------------------------------------------------------------
// The example scenario: cmd/redirect-proxy as a user runs it.

var exampleChecks = []string{"curl_tcp4_relayed", "curl_tcp6_relayed", "udp4_client_by_pid_relayed",
	"direct_from_another_machine_refused", "lines_and_summary"}

func scenarioExample() int {
	bin := os.Getenv("WR_E2E_PROXY_BIN")
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	udpClient, err := startClient("", "udp", net.JoinHostPort(e2eServer4, strconv.Itoa(e2eUDPPort)), 500)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	proxy := exec.Command(bin, "--port", strconv.Itoa(port), "--process", "curl", "--pid", strconv.Itoa(udpClient.pid),
		"--udp-idle", "1s")
	out := &syncbuf.Buffer{}
	proxy.Stdout, proxy.Stderr = out, out
	if err := proxy.Start(); err != nil {
		fmt.Println(err)
		return 1
	}
	defer proxy.Process.Kill()
	if !outputHas(out, "Ctrl-C stops.", 10*time.Second) {
		fmt.Printf("redirect-proxy did not start:\n%s\n", out.String())
		return 1
	}
	for _, c := range []struct{ check, host string }{
		{"curl_tcp4_relayed", e2eServer4}, {"curl_tcp6_relayed", "[" + e2eServer6 + "]"},
	} {
		cmd := exec.Command("curl", "-sS", "-g", "-m", "15", "-w", `%{local_port}`, fmt.Sprintf("http://%s:%d/", c.host, e2eHTTPPort))
		b, err := cmd.CombinedOutput()
		body, localPort, _ := strings.Cut(string(b), "\n")
		var f []string
		if err != nil || !strings.HasPrefix(body, "from=") {
			f = append(f, fmt.Sprintf("curl: %v %q", err, b))
		} else if strings.HasSuffix(body, ":"+localPort) {
			f = append(f, fmt.Sprintf("redirection was not observed: the server saw curl's own port (%s)", body))
		}
		want := fmt.Sprintf("TCP  curl (%d)", cmd.Process.Pid)
		if !outputHas(out, want, 3*time.Second) {
			f = append(f, fmt.Sprintf("redirect-proxy printed no line %q", want))
		}
		report(c.check, f, "")
	}
	res := udpClient.run()
	var f []string
	if res.Err != "" || !res.DataOK {
		f = append(f, fmt.Sprintf("the UDP client: %s (data ok %v)", res.Err, res.DataOK))
	} else if res.From == res.Local {
		f = append(f, "redirection was not observed: the server saw the UDP client's own address "+res.Local)
	}
	report("udp4_client_by_pid_relayed", f, "")
	direct := net.JoinHostPort(e2eClient4, strconv.Itoa(port))
	report("direct_from_another_machine_refused", directRefused(direct, directClient(direct)), "")

	proxy.Process.Signal(syscall.SIGINT)
	waited := make(chan error, 1)
	go func() { waited <- proxy.Wait() }()
	f = nil
	select {
	case err := <-waited:
		if err != nil {
			f = append(f, fmt.Sprintf("redirect-proxy exited with %v", err))
		}
	case <-time.After(10 * time.Second):
		f = append(f, "redirect-proxy did not exit 10 s after SIGINT")
	}
	text := out.String()
	self, _ := os.Executable()
	for _, want := range []string{
		fmt.Sprintf("UDP  %s (%d)", filepath.Base(self), udpClient.pid),
		fmt.Sprintf("-> %s:%d", e2eServer4, e2eUDPPort),
		fmt.Sprintf("-> [%s]:%d", e2eServer6, e2eHTTPPort),
		"summary: 2 TCP connections (0 failed), 1 UDP flow (0 failed)",
		"; 1 not redirected (refused)\n",
	} {
		if !strings.Contains(text, want) {
			f = append(f, fmt.Sprintf("the output lacks %q", want))
		}
	}
	report("lines_and_summary", f, "")
	fmt.Printf("redirect-proxy output:\n%s", text)
	return 0
}

// outputHas waits for the text s in b.
func outputHas(b *syncbuf.Buffer, s string, d time.Duration) bool {
	return b.WaitFor(regexp.MustCompile(regexp.QuoteMeta(s)), d) != ""
}
