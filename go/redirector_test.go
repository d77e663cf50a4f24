//go:build (linux && cgo) || (windows && (amd64 || arm64))

package redirector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// open returns a Redirector closed at the end of the test.
func open(t testing.TB, opts Options) *Redirector {
	t.Helper()
	r, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// start starts r. On Windows (under wine) the tests run beside the stand-in
// WinDivert.dll (test/windows/fake_windivert.c), which brings no traffic
// unless a test gives it a script.
func start(t *testing.T, r *Redirector) {
	t.Helper()
	if err := r.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
}

// wantErr checks errors.Is(err, code) and that the text holds each part.
func wantErr(t *testing.T, err error, code Error, parts ...string) {
	t.Helper()
	if !errors.Is(err, code) {
		t.Fatalf("got %v, want %d (%v)", err, int(code), code)
	}
	var oe *OpError
	if !errors.As(err, &oe) || oe.Code != code {
		t.Fatalf("got %#v, want an *OpError with code %d", err, int(code))
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not say %q", err, p)
		}
	}
}

// The library's text of each code is the package's (the values themselves
// are held to the header by TestErrorCodesEqualTheHeader on Linux, and by
// every errors.Is below, which compares with the code the library set).
func TestErrorTextsEqualTheLibrarys(t *testing.T) {
	open(t, Options{}) // loads the library
	for code := range errorText {
		if got := cStrerror(int32(code)); got != code.Error() {
			t.Errorf("%d: Go text %q, redirector_strerror %q", int32(code), code.Error(), got)
		}
	}
	if got := Error(-999).Error(); got != "unknown error code -999" {
		t.Errorf("unknown code text %q", got)
	}
}

func TestVersion(t *testing.T) {
	if v := Version(); !regexp.MustCompile(`^\d+\.\d+\.\d+`).MatchString(v) {
		t.Fatalf("version %q", v)
	}
}

func TestSecondRedirectorRefused(t *testing.T) {
	r := open(t, Options{})
	if r2, err := New(Options{}); !errors.Is(err, ErrInUse) || r2 != nil {
		t.Fatalf("second New: %v, %v; want ErrInUse", r2, err)
	}
	if !strings.Contains(ErrInUse.Error(), "process-global") {
		t.Fatalf("ErrInUse should say why: %q", ErrInUse)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r3, err := New(Options{})
	if err != nil {
		t.Fatalf("New after Close: %v", err)
	}
	r3.Close()
}

func TestRejectedNewLeavesRoom(t *testing.T) {
	if _, err := New(Options{MaxFlows: 3}); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("New with a bad config: %v", err)
	}
	open(t, Options{}) // the failed New did not stay open
}

func TestCloseTwiceAndUseAfterClose(t *testing.T) {
	r, err := New(Options{AppPort: 18080})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for name, err := range map[string]error{
		"Start":      r.Start(context.Background()),
		"Stop":       r.Stop(),
		"SetConfig":  r.SetConfig(Options{}),
		"SetAppPort": r.SetAppPort(1),
		"Lookup": func() error {
			_, err := r.LookupAddrPort(TCP, netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:2"))
			return err
		}(),
		"Stats":          func() error { _, err := r.Stats(); return err }(),
		"WouldIntercept": func() error { _, err := r.WouldIntercept(1, ""); return err }(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	if _, ok := <-r.Events(context.Background()); ok {
		t.Fatal("Events after Close should be a closed channel")
	}
}

func TestStartWithoutAppPort(t *testing.T) {
	r := open(t, Options{PIDs: []int{4201234}})
	wantErr(t, r.Start(context.Background()), ErrInit, "no application port", "AppPort")
	if r.Running() {
		t.Fatal("running after a failed start")
	}
}

func TestStartStopCycle(t *testing.T) {
	r := open(t, Options{AppPort: 18081, PIDs: []int{4201234}})
	start(t, r)
	if !r.Running() {
		t.Fatal("not running after Start")
	}
	wantErr(t, r.Start(context.Background()), ErrAlreadyRunning, "start_redirector", "already running")
	if err := r.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if r.Running() {
		t.Fatal("running after Stop")
	}
	wantErr(t, r.Stop(), ErrNotRunning, "stop_redirector", "not running")
	for i := 0; i < 3; i++ { // Start after Stop works, again and again
		if err := r.Start(context.Background()); err != nil {
			t.Fatalf("Start #%d after Stop: %v", i+2, err)
		}
		if err := r.Stop(); err != nil {
			t.Fatalf("Stop #%d: %v", i+2, err)
		}
	}
	// Close stops a running redirector.
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil || r.Running() {
		t.Fatalf("Close while running: %v, running %v", err, r.Running())
	}
}

// On Windows without WinDivert (a folder without it), Start must fail with
// ErrInit and say so plainly, naming where it looked; nothing is left
// running. Without the folder it starts (the stand-in beside the DLL).
func TestStartReportsMissingWinDivert(t *testing.T) {
	if runtime.GOOS != "windows" {
		r := open(t, Options{AppPort: 18087, WinDivertDir: "/nonexistent/windivert"})
		start(t, r) // the folder is kept but not used on Linux
		return
	}
	// Long enough that the error text is too (past the 256 bytes the
	// package first reads it into).
	dir := `C:\nonexistent\windivert-` + strings.Repeat("d", 300)
	r := open(t, Options{AppPort: 18087, WinDivertDir: dir})
	wantErr(t, r.Start(context.Background()), ErrInit, "start_redirector", "WinDivert driver not found", dir)
	if r.Running() {
		t.Fatal("running after a failed start")
	}
	wantErr(t, r.Stop(), ErrNotRunning)
	if err := r.SetConfig(Options{AppPort: 18087}); err != nil {
		t.Fatal(err)
	}
	start(t, r)
}

func TestStartContextStops(t *testing.T) {
	r := open(t, Options{AppPort: 18082})
	if err := r.Start(canceled()); err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("Start with a cancelled context: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	waitFor(t, "the redirector to stop after cancel", func() bool { return !r.Running() })
	// The next run is not stopped by the old context.
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if !r.Running() {
		t.Fatal("a new run was stopped")
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Test PIDs lie above 4194304 (Linux's PID_MAX_LIMIT), so none is the test
// process's own PID, which is never intercepted.
func TestConfigErrors(t *testing.T) {
	base := Options{PIDs: []int{4204321}, Description: "before"}
	r := open(t, base)
	for _, c := range []struct {
		name  string
		opts  Options
		code  Error
		parts []string
	}{
		{"max flows", Options{MaxFlows: 8}, ErrBadConfig, []string{"max_flows", "16 to 1048576", "8"}},
		{"negative pid", Options{PIDs: []int{1, -5}}, ErrBadConfig, []string{"intercept_pids[1]"}},
		{"negative tree", Options{Trees: []int{-5}}, ErrBadConfig, []string{"intercept_trees[0]"}},
		{"ambiguous tree", Options{Intercept: []string{"curl", "tree:!5"}}, ErrBadConfig,
			[]string{"intercept[1]", "ambiguous", "!tree:"}},
		{"port 0", Options{Ports: []PortRange{Port(443), {0, 0}}}, ErrBadConfig, []string{"ports[1]"}},
		{"reversed range", Options{ExcludePorts: []PortRange{{900, 800}}}, ErrBadConfig, []string{"exclude_ports[0]"}},
		{"invalid prefix", Options{Destinations: []netip.Prefix{{}}}, ErrBadConfig, []string{"destinations[0]"}},
		{"protocol", Options{Protocols: []Protocol{TCP, 99}}, ErrBadConfig, []string{"protocols", "protocol(99)"}},
		{"direction", Options{Directions: []Direction{7}}, ErrBadConfig, []string{"directions"}},
		{"bypass", Options{Bypass: []string{"loopback", "nope"}}, ErrBadConfig, []string{"bypass[1]", "nope"}},
		{"hold timeout", Options{HoldTimeout: 2 * time.Minute}, ErrBadConfig, []string{"hold_timeout_ms", "120000"}},
		{"idle timeout", Options{UDPIdleTimeout: time.Millisecond}, ErrBadConfig, []string{"udp_idle_timeout_ms"}},
		{"held packets", Options{MaxHeldPackets: 70000}, ErrBadConfig, []string{"max_held_packets"}},
		{"negative held packets", Options{MaxHeldPackets: -5}, ErrBadConfig, []string{"max_held_packets", "-5"}},
		{"description", Options{Description: "caf\xe9"}, ErrNotUTF8, []string{"Description"}},
		{"intercept", Options{Intercept: []string{"ok", "\xff"}}, ErrNotUTF8, []string{"Intercept[1]"}},
		{"windivert dir", Options{WinDivertDir: "C:\\\xff"}, ErrNotUTF8, []string{"WinDivertDir"}},
		{"windivert NUL", Options{WinDivertDir: "C:\\a\x00b"}, ErrInvalid, []string{"NUL"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantErr(t, r.SetConfig(c.opts), c.code, c.parts...)
			// The configuration before stays in force.
			if yes, err := r.WouldIntercept(4204321, ""); err != nil || !yes {
				t.Fatalf("previous config lost: %v %v", yes, err)
			}
			if r.Options().Description != "before" {
				t.Fatal("Options() changed by a rejected SetConfig")
			}
		})
	}
}

func TestConfigApplied(t *testing.T) {
	r := open(t, Options{PIDs: []int{4201111}, Intercept: []string{"curl", "!4202222", "*\\chrome.exe"}})
	self := os.Getpid()
	for _, c := range []struct {
		pid  int
		path string
		want bool
	}{
		{4201111, "", true},
		{4203333, "", false},
		{4203333, "/usr/bin/curl", true},
		{4203333, "/usr/bin/CURL", true},
		{4202222, "/usr/bin/curl", false},
		{4203333, `C:\Program Files\Google\chrome.exe`, true},
		{4203333, "/usr/bin/wget", false},
		{self, "/usr/bin/curl", false},                  // never the calling process
		{4, "/usr/bin/curl", runtime.GOOS != "windows"}, // Windows' System process; on Linux a process like any other
	} {
		got, err := r.WouldIntercept(c.pid, c.path)
		if err != nil || got != c.want {
			t.Errorf("WouldIntercept(%d, %q) = %v, %v; want %v", c.pid, c.path, got, err, c.want)
		}
	}
	// "!" first: everything but the excluded.
	if err := r.SetConfig(Options{Intercept: []string{"!curl"}}); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{"/usr/bin/curl": false, "/usr/bin/wget": true} {
		if got, _ := r.WouldIntercept(4203333, path); got != want {
			t.Errorf("!curl: %s intercepted %v, want %v", path, got, want)
		}
	}
	// Trees: without an ancestry (WouldIntercept), a process is in the trees it roots.
	if err := r.SetConfig(Options{Trees: []int{4204444}, Intercept: []string{"tree:bash"}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		pid  int
		path string
		want bool
	}{{4204444, "", true}, {4203333, "/bin/bash", true}, {4203333, "/usr/bin/curl", false}} {
		if got, _ := r.WouldIntercept(c.pid, c.path); got != c.want {
			t.Errorf("trees: %d %s intercepted %v, want %v", c.pid, c.path, got, c.want)
		}
	}
	// Go-side argument checks.
	_, err := r.WouldIntercept(-1, "")
	wantErr(t, err, ErrInvalid, "out of range")
	_, err = r.WouldIntercept(1, "a\x00b")
	wantErr(t, err, ErrInvalid, "NUL")
	_, err = r.WouldIntercept(1, "/usr/bin/\xff")
	wantErr(t, err, ErrNotUTF8, "redirector_would_intercept")
}

func TestConfigJSON(t *testing.T) {
	o := Options{
		PIDs: []int{1, 2}, Trees: []int{3}, Intercept: []string{"curl", "!7"}, Protocols: []Protocol{UDP},
		Directions: []Direction{Outbound}, Ports: []PortRange{Port(443), {8000, 8100}},
		Destinations:        []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")},
		ExcludeDestinations: []netip.Prefix{netip.MustParsePrefix("fd00::/8")}, Bypass: []string{},
		MaxFlows: 1024, MaxHeldPackets: NoHeldPackets, HoldTimeout: 1500 * time.Microsecond, TCPIdleTimeout: time.Hour,
		Description: "d",
	}
	js, err := o.configJSON("SetConfig")
	if err != nil {
		t.Fatal(err)
	}
	want := `{"bypass":[],"description":"d","destinations":["198.18.0.0/15"],"directions":["outbound"],` +
		`"exclude_destinations":["fd00::/8"],"hold_timeout_ms":2,"intercept":["curl","!7"],"intercept_pids":[1,2],` +
		`"intercept_trees":[3],` +
		`"max_flows":1024,"max_held_packets":0,"ports":[443,"8000-8100"],"protocols":["udp"],"tcp_idle_timeout_ms":3600000}`
	if js != want {
		t.Fatalf("config JSON\n got %s\nwant %s", js, want)
	}
	if js, _ := (&Options{}).configJSON("New"); js != "{}" {
		t.Fatalf("zero Options: %s", js)
	}
	r := open(t, o) // and the library accepts it
	if yes, _ := r.WouldIntercept(2, ""); !yes {
		t.Fatal("PID 2 not intercepted")
	}
}

// A zero field means the library's default in New and SetConfig alike, and
// AppPort 0 keeps the port in force; SetAppPort(0) is refused.
func TestZeroValues(t *testing.T) {
	r := open(t, Options{AppPort: 18096, MaxFlows: 1024})
	wantErr(t, r.SetAppPort(0), ErrInvalid, "SetAppPort: port 0")
	start(t, r)
	if st, err := r.Stats(); err != nil || st.FlowCapacity != 1024 {
		t.Fatalf("MaxFlows 1024: %+v %v", st, err)
	}
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := r.SetConfig(Options{}); err != nil || r.Options().AppPort != 18096 {
		t.Fatalf("SetConfig(Options{}): %v, port %d", err, r.Options().AppPort)
	}
	start(t, r) // the port is still in force
	if st, err := r.Stats(); err != nil || st.FlowCapacity != 65536 {
		t.Fatalf("MaxFlows 0 after 1024: %+v %v; want the default 65536", st, err)
	}
}

func TestEngineFailureIsErrEngine(t *testing.T) {
	r := open(t, Options{PIDs: []int{5555}})
	if rc := cInjectFault(faultConfig); rc != 0 {
		t.Fatalf("inject fault: %d", rc)
	}
	// set_redirector_config returns -2 for both a bad field and an engine
	// failure: redirector_last_error_code tells them apart.
	wantErr(t, r.SetConfig(Options{PIDs: []int{6666}}), ErrEngine, "set_redirector_config")
	if yes, _ := r.WouldIntercept(5555, ""); !yes {
		t.Fatal("the configuration in force was lost")
	}
	if err := r.SetConfig(Options{PIDs: []int{6666}}); err != nil {
		t.Fatalf("after the rebuild: %v", err)
	}
	if yes, _ := r.WouldIntercept(6666, ""); !yes {
		t.Fatal("new config not applied after the rebuild")
	}
}

// Memory running out while the library copies a configuration is
// ErrNoMemory (set_redirector_config's -2, told apart by the last-error code),
// and the configuration in force stays.
func TestOutOfMemoryIsErrNoMemory(t *testing.T) {
	r := open(t, Options{PIDs: []int{4205555}})
	if rc := cInjectFault(faultMemory); rc != 0 {
		t.Fatalf("inject: %d", rc)
	}
	err := r.SetConfig(Options{PIDs: []int{4206666}})
	wantErr(t, err, ErrNoMemory, "SetConfig: set_redirector_config: out of memory")
	if yes, _ := r.WouldIntercept(4205555, ""); !yes {
		t.Fatal("the configuration in force was lost")
	}
	if err := r.SetConfig(Options{PIDs: []int{4206666}}); err != nil {
		t.Fatalf("after: %v", err)
	}
}

// The library's last error belongs to the OS thread that failed, and a
// goroutine may move between threads between two cgo calls: each error must
// still carry its own call's code and text while goroutines fail in
// different ways at once, and while other code in the process fails too.
// Run under -race and with GOMAXPROCS > 1 to mix threads.
func TestErrorsOfConcurrentGoroutines(t *testing.T) {
	r := open(t, Options{PIDs: []int{4204321}})
	if runtime.GOMAXPROCS(0) < 4 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	}
	peer := netip.MustParseAddrPort("198.18.0.10:443")
	local := netip.MustParseAddrPort("10.0.0.1:18083")
	calls := []func() error{
		func() error { return r.SetConfig(Options{PIDs: []int{4204321}, MaxFlows: 8}) },
		func() error { _, err := r.LookupAddrPort(TCP, local, peer); return err },
		func() error { _, err := r.WouldIntercept(1, "/bin/\xff"); return err },
		r.Stop,
		func() error { return r.SetConfig(Options{PIDs: []int{4204321, -5}}) },
	}
	wants := []struct {
		code  Error
		parts []string
	}{
		{ErrBadConfig, []string{"SetConfig: set_redirector_config: max_flows", "8"}},
		{ErrNotRunning, []string{"Lookup: redirector_lookup: the redirector is not running"}},
		{ErrNotUTF8, []string{"WouldIntercept: redirector_would_intercept: process_path is not valid UTF-8"}},
		{ErrNotRunning, []string{"Stop: stop_redirector: the redirector is not running"}},
		{ErrBadConfig, []string{"SetConfig: set_redirector_config: intercept_pids[1]"}},
	}
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for g := 0; g < 2*len(calls)+2; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				if g >= 2*len(calls) {
					cFailElsewhere() // other code in the process, failing on its own thread
					continue
				}
				k := g % len(calls)
				err := calls[k]()
				var oe *OpError
				ok := errors.As(err, &oe) && oe.Code == wants[k].code
				for _, p := range wants[k].parts {
					ok = ok && strings.Contains(err.Error(), p)
				}
				if !ok {
					select {
					case errs <- fmt.Sprintf("call %d: got %v, want code %d saying %q", k, err, wants[k].code, wants[k].parts):
					default:
					}
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestLookupErrors(t *testing.T) {
	r := open(t, Options{AppPort: 18083})
	peer := netip.MustParseAddrPort("198.18.0.10:443")
	local := netip.MustParseAddrPort("10.0.0.1:18083")
	_, err := r.LookupAddrPort(TCP, local, peer)
	wantErr(t, err, ErrNotRunning, "redirector_lookup")
	_, err = r.LookupAddrPort(Protocol(1), local, peer)
	wantErr(t, err, ErrInvalid, "protocol 1")
	_, err = r.LookupAddrPort(TCP, local, netip.AddrPort{})
	wantErr(t, err, ErrInvalid, "valid")
	_, err = r.LookupUDP(&net.TCPAddr{}, &net.UDPAddr{})
	wantErr(t, err, ErrInvalid, "*net.TCPAddr")
	_, err = r.LookupUDP(nil, &net.UDPAddr{})
	wantErr(t, err, ErrInvalid)
	_, err = r.Lookup(nil)
	wantErr(t, err, ErrInvalid, "nil")
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	_, err = r.Lookup(a)
	wantErr(t, err, ErrInvalid, "not a TCP or UDP connection")

	start(t, r)
	for _, c := range []struct {
		proto       Protocol
		local, peer string
	}{
		{TCP, "10.0.0.1:18083", "198.18.0.10:443"},
		{UDP, "[::]:18083", "[::ffff:198.18.0.10]:53"},
		{TCP, "[fd00::1]:18083", "[fd00:198:18::10]:443"},
	} {
		_, err := r.LookupAddrPort(c.proto, netip.MustParseAddrPort(c.local), netip.MustParseAddrPort(c.peer))
		wantErr(t, err, ErrNotFound, "redirector_lookup", strings.ToUpper(c.proto.String()))
	}
	// A short struct size is the library's EINVAL, with its own text.
	r.mu.Lock()
	_, e := r.sc.lookupShort()
	r.mu.Unlock()
	wantErr(t, opError("Lookup", e), ErrInvalid, "redirector_lookup: out->size")
	st, err := r.Stats()
	if err != nil || st.Lookups != 0 || st.LookupMisses < 3 {
		t.Fatalf("stats after 3 misses: %+v %v", st, err)
	}
}

func TestEndpointConversion(t *testing.T) {
	for _, c := range []struct {
		in     string
		family int
	}{
		{"198.18.0.10:443", 4},
		{"[fd00:198:18::10]:53", 6},
		{"[::ffff:1.2.3.4]:80", 6}, // kept as given: the library understands IPv4-mapped addresses
		{"0.0.0.0:0", 4},
		{"[::]:65535", 6},
	} {
		in := netip.MustParseAddrPort(c.in)
		var ep rawEndpoint
		ep.set(in)
		if back := ep.get(); int(ep.family) != c.family || back != in {
			t.Errorf("%s: family %d, back %s", c.in, ep.family, back)
		}
	}
	if got := addrPort(nil, 80); got != netip.MustParseAddrPort("[::]:80") {
		t.Errorf("nil IP: %s", got)
	}
	if got := addrPort(net.ParseIP("1.2.3.4"), 80); got.Addr().Unmap() != netip.MustParseAddr("1.2.3.4") {
		t.Errorf("16-byte IPv4: %s", got)
	}
}

// logLines is a Logger that keeps its lines.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Printf(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, v...))
}

func (l *logLines) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// dialDirect connects to the app port directly and reports what it read
// back after sending "ping" and its end of data.
func dialDirect(addr string) <-chan string {
	got := make(chan string, 1)
	go func() {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			got <- "dial: " + err.Error()
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("ping"))
		c.(*net.TCPConn).CloseWrite()
		b, err := io.ReadAll(c)
		if err != nil {
			got <- fmt.Sprintf("read %q, then %v", b, err)
			return
		}
		got <- fmt.Sprintf("read %q", b)
	}()
	return got
}

// A connection to the app port that the library did not redirect (here a
// local one, made directly) is not served: Accept closes it, counts it, logs
// it, and waits on for a redirected one.
func TestListenerRefusesDirectConnections(t *testing.T) {
	logs := &logLines{}
	r := open(t, Options{Logger: logs})
	ln, err := r.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := r.SetAppPort(ln.Port()); err != nil || r.Options().AppPort != ln.Port() || ln.Port() == 0 {
		t.Fatalf("SetAppPort(%d): %v", ln.Port(), err)
	}
	start(t, r)
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.AcceptRedirected()
		if err == nil {
			c.Close()
			err = fmt.Errorf("a connection was accepted: %+v", c.Origin())
		}
		accepted <- err
	}()
	for i := 1; i <= 2; i++ {
		if got := <-dialDirect(ln.Addr().String()); got != `read ""` && !strings.Contains(got, "reset") {
			t.Fatalf("direct connection %d: %s; want it closed unserved", i, got)
		}
		waitFor(t, "the refusal to be counted", func() bool { return ln.Refused() == uint64(i) })
	}
	if !strings.Contains(logs.text(), "redirector: closed a connection from 127.0.0.1:") ||
		!strings.Contains(logs.text(), "to the app port: not redirected (redirector: Lookup: redirector_lookup: no redirected TCP") {
		t.Fatalf("log:\n%s", logs.text())
	}
	ln.Close()
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("AcceptRedirected after the listener closed: %v", err)
	}
	// Once the Redirector is closed, nothing can be served: Accept says so.
	ln2, err := r.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	r.Close()
	done := dialDirect(ln2.Addr().String())
	if _, err := ln2.Accept(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	<-done
}

// With AcceptDirect, a direct connection is returned, marked as such, and
// can be served.
func TestListenerAcceptDirect(t *testing.T) {
	r := open(t, Options{})
	ln, err := r.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ln.AcceptDirect = true
	if err := r.SetAppPort(ln.Port()); err != nil {
		t.Fatal(err)
	}
	// A new configuration without a port keeps it.
	if err := r.SetConfig(Options{PIDs: []int{4201234}}); err != nil || r.Options().AppPort != ln.Port() {
		t.Fatalf("SetConfig without AppPort: %v, port %d", err, r.Options().AppPort)
	}
	start(t, r)

	done := make(chan error, 1)
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		c.Write([]byte("ping"))
		c.(*net.TCPConn).CloseWrite()
		buf := make([]byte, 16)
		n, _ := c.Read(buf)
		if string(buf[:n]) != "pong" {
			done <- fmt.Errorf("read %q", buf[:n])
			return
		}
		done <- nil
	}()
	ln.Listener.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	nc, err := ln.Accept()
	if err != nil {
		t.Fatalf("Accept: %v (dial: %v)", err, <-done)
	}
	c := nc.(*Conn)
	defer c.Close()
	if c.Redirected() || c.Origin() != (Origin{}) || ln.Refused() != 0 {
		t.Fatalf("a direct connection reads as redirected: %+v (refused %d)", c.Origin(), ln.Refused())
	}
	wantErr(t, c.OriginErr(), ErrNotFound, "redirector_lookup")
	if _, ok := c.NetConn().(*net.TCPConn); !ok {
		t.Fatalf("NetConn is %T", c.NetConn())
	}
	buf := make([]byte, 16)
	n, _ := c.Read(buf)
	if string(buf[:n]) != "ping" {
		t.Fatalf("read %q", buf[:n])
	}
	if n, err := c.Read(buf); n != 0 || err == nil {
		t.Fatalf("no EOF after the peer's CloseWrite: %d %v", n, err)
	}
	if _, err := c.ReadFrom(strings.NewReader("pong")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Lookup on the *Conn asks again.
	_, err = r.Lookup(c)
	wantErr(t, err, ErrNotFound)
}

func TestStats(t *testing.T) {
	r := open(t, Options{MaxFlows: 1024})
	st, err := r.Stats()
	if err != nil || st.Running {
		t.Fatalf("stats before start: %+v %v", st, err)
	}
	if err := r.SetAppPort(18084); err != nil {
		t.Fatal(err)
	}
	start(t, r)
	st, err = r.Stats()
	if err != nil || !st.Running || st.FlowCapacity != 1024 || st.BytesPerFlow == 0 {
		t.Fatalf("stats while running with MaxFlows 1024: %+v %v", st, err)
	}
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	st, err = r.Stats()
	if err != nil || st.Running || st.FlowCapacity != 1024 {
		t.Fatalf("stats after stop (the last run's): %+v %v", st, err)
	}
}

func TestEventsChannels(t *testing.T) {
	r := open(t, Options{AppPort: 18085})
	ctx1, cancel1 := context.WithCancel(context.Background())
	ev1 := r.Events(ctx1)
	ev2 := r.Events(context.Background())
	start(t, r)
	select {
	case e, ok := <-ev1:
		t.Fatalf("an event without traffic: %+v %v", e, ok)
	case <-time.After(300 * time.Millisecond):
	}
	// Stop and start under a listening channel.
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * eventStopped)
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	cancel1()
	closedWithin(t, ev1, "a cancelled Events channel")
	select {
	case e, ok := <-ev2:
		t.Fatalf("the other channel ended or got %+v (%v)", e, ok)
	case <-time.After(100 * time.Millisecond):
	}
	t0 := time.Now()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	closedWithin(t, ev2, "an Events channel after Close")
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("Close took %v", d)
	}
}

func closedWithin(t *testing.T, ch <-chan Event, what string) {
	t.Helper()
	select {
	case e, ok := <-ch:
		if ok {
			t.Fatalf("%s delivered %+v", what, e)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("%s is still open", what)
	}
}

// Many goroutines at once: lookups, stats, configs, events, start and stop.
// Every error must be one the call can give, with its own text. Run under
// -race.
func TestConcurrentUse(t *testing.T) {
	r := open(t, Options{AppPort: 18086})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evs := r.Events(ctx)
	go func() {
		for range evs {
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	report := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	deadline := time.Now().Add(1500 * time.Millisecond)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for time.Now().Before(deadline) {
			if err := r.Start(ctx); err != nil {
				report(fmt.Errorf("Start: %w", err))
			}
			time.Sleep(time.Millisecond)
			if err := r.Stop(); err != nil {
				report(fmt.Errorf("Stop: %w", err))
			}
		}
	}()
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			peer := netip.AddrPortFrom(netip.MustParseAddr("198.18.0.10"), uint16(1000+g))
			local := netip.MustParseAddrPort("10.0.0.1:18086")
			for i := 0; time.Now().Before(deadline); i++ {
				_, err := r.LookupAddrPort(TCP, local, peer)
				var oe *OpError
				switch {
				case errors.As(err, &oe) && oe.Code == ErrNotFound && strings.Contains(oe.Msg, "no redirected TCP"):
				case errors.As(err, &oe) && oe.Code == ErrNotRunning && strings.HasPrefix(oe.Msg, "redirector_lookup:"):
				default:
					report(fmt.Errorf("Lookup: %v", err))
				}
				if _, err := r.Stats(); err != nil {
					report(err)
				}
				if i%10 == 0 {
					if err := r.SetConfig(Options{AppPort: 18086, PIDs: []int{g + 100}}); err != nil {
						report(err)
					}
					err := r.SetConfig(Options{AppPort: 18086, MaxFlows: 1})
					if !errors.As(err, &oe) || oe.Code != ErrBadConfig || !strings.Contains(oe.Msg, "max_flows") {
						report(fmt.Errorf("bad SetConfig: %v", err))
					}
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
