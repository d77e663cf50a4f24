//go:build (linux && cgo) || (windows && (amd64 || arm64))

package redirector

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"
)

// Redirector is the library, configured and started from Go.
//
// The C library underneath is global to the process: one configuration, one
// running redirector. So only one Redirector may be open at a time: New
// returns ErrInUse while another is open, and Close makes room for the next.
// All methods are safe for concurrent use.
type Redirector struct {
	// mu guards the fields below (sc is used by one caller at a time) and
	// keeps a configuration, its path and port together.
	mu      sync.Mutex
	opts    Options
	sc      scratch       // C memory for lookups and statistics
	runDone chan struct{} // non-nil while a run this Redirector started goes on; closed when it ends
	closed  bool
	done    chan struct{} // closed by Close

	events eventHub
}

var (
	liveMu sync.Mutex
	live   *Redirector
)

// New applies opts to the library and returns the process's Redirector. It
// returns ErrInUse while another Redirector is open, and the library's error
// (ErrBadConfig, ErrNotUTF8, ...) when it rejects the configuration.
//
// On Windows the first New loads windows_redirector.dll (see
// SetLibraryPath); when it cannot (not found, not a DLL for this program's
// architecture, an older DLL without an export the package calls), New
// returns ErrInit saying which, and a later New tries again.
func New(opts Options) (*Redirector, error) {
	liveMu.Lock()
	defer liveMu.Unlock()
	if live != nil {
		return nil, ErrInUse
	}
	if err := loadLibrary(); err != nil {
		return nil, goError("New", ErrInit, err.Error())
	}
	r := &Redirector{sc: newScratch(), done: make(chan struct{})}
	if !r.sc.ok() {
		return nil, goError("New", ErrInit, "out of memory")
	}
	r.events.r = r
	if err := r.apply("New", opts); err != nil {
		r.sc.free()
		return nil, err
	}
	live = r
	return r, nil
}

// Version returns the library's version, e.g. "0.1.0"; "" when the library
// cannot be loaded (Windows: New says why).
func Version() string {
	if loadLibrary() != nil {
		return ""
	}
	return cVersion()
}

// SetLibraryPath says where windows_redirector.dll is when it is not beside
// the program: the DLL's path, or the folder that holds it (a relative path
// is taken from the current folder now). On Windows the library is loaded on
// first use (New or Version), never at start-up, from the program's folder
// first, then from here; nothing else is searched (not the current folder,
// not PATH). "" forgets the path. Call it before that first use: once the
// library is loaded, naming another file is ErrInvalid. On Linux it does
// nothing: the library is linked when the program is built (see the package
// documentation).
func SetLibraryPath(path string) error { return setLibraryPath(path) }

func (r *Redirector) logf(format string, v ...any) {
	if r.opts.Logger != nil {
		r.opts.Logger.Printf(format, v...)
	}
}

// SetConfig replaces the whole configuration: fields left zero take the
// library's defaults, and AppPort 0 keeps the current port. While running,
// new connections follow it at once; connections already redirected keep
// their decision. A rejected configuration leaves the previous one in force,
// and the error names the field:
//
//	redirector: SetConfig: set_redirector_config: max_flows: expected an integer from 16 to 1048576, got 8
func (r *Redirector) SetConfig(opts Options) error {
	return r.apply("SetConfig", opts)
}

// apply sets opts in force; AppPort 0 keeps the port in force (read under
// the same lock, so a SetAppPort meanwhile is not undone).
func (r *Redirector) apply(op string, opts Options) error {
	js, err := opts.configJSON(op)
	if err != nil {
		return err
	}
	if !utf8.ValidString(opts.WinDivertDir) {
		return goError(op, ErrNotUTF8, "Options.WinDivertDir is not valid UTF-8")
	}
	if strings.IndexByte(opts.WinDivertDir, 0) >= 0 || len(opts.WinDivertDir) > 32767 {
		return goError(op, ErrInvalid, "Options.WinDivertDir holds a NUL byte or is longer than 32767 bytes")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	if opts.AppPort == 0 {
		opts.AppPort = r.opts.AppPort
	}
	if rc, e := cSetConfig(js); rc != 0 {
		return opError(op, e)
	}
	if rc, e := cSetWinDivertPath(opts.WinDivertDir); rc != 0 {
		return opError(op, e)
	}
	if rc, e := cSetAppPort(opts.AppPort); rc != 0 {
		opts.AppPort = r.opts.AppPort // the configuration is in force, the port not
		r.opts = opts
		return opError(op, e)
	}
	r.opts = opts
	return nil
}

// Options returns the configuration in force (the last one accepted).
func (r *Redirector) Options() Options {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opts
}

// SetAppPort changes the port the proxy listens on; redirected connections
// arrive there from now on (those already redirected keep theirs). Port 0 is
// ErrInvalid (as in Options, 0 is no port: Stop or Close ends redirecting).
// While running, ErrInit if the capture could not be set up for the port
// (Linux: iptables, or more than 16 ports in one run): the old port stays.
func (r *Redirector) SetAppPort(port uint16) error {
	if port == 0 {
		return goError("SetAppPort", ErrInvalid, "port 0 is no port: give the port your proxy listens on")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	if rc, e := cSetAppPort(port); rc != 0 {
		return opError("SetAppPort", e)
	}
	r.opts.AppPort = port
	return nil
}

// Start starts the redirector and returns without waiting for traffic.
// Cancelling ctx stops it, as Stop does (ctx is not used after that).
//
// Errors: ErrAlreadyRunning; ErrInit with the reason (no AppPort; on
// Windows "WinDivert driver not found" or "Access denied" and what to do;
// on Linux no root or iptables); ErrClosed.
func (r *Redirector) Start(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	if r.opts.AppPort == 0 {
		return goError("Start", ErrInit, "no application port: set Options.AppPort, or call SetAppPort with "+
			"the port your proxy listens on")
	}
	if rc, e := cStart(); rc != 0 {
		return opError("Start", e)
	}
	run := make(chan struct{})
	r.runDone = run
	r.logf("redirector: started: app port %d", r.opts.AppPort)
	if ctx.Done() != nil {
		go func() {
			select {
			case <-ctx.Done():
				r.mu.Lock()
				defer r.mu.Unlock()
				if r.runDone == run {
					if err := r.stopLocked("Start"); err != nil {
						r.logf("redirector: stopping after the context ended: %v", err)
					}
				}
			case <-run:
			}
		}()
	}
	return nil
}

// Stop stops the redirector: capture ends and traffic flows directly again.
// A later Start starts afresh. ErrNotRunning if it was not running.
func (r *Redirector) Stop() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	return r.stopLocked("Stop")
}

func (r *Redirector) stopLocked(op string) error {
	rc, e := cStop()
	if r.runDone != nil {
		close(r.runDone)
		r.runDone = nil
	}
	if rc != 0 {
		return opError(op, e)
	}
	r.logf("redirector: stopped")
	return nil
}

// Running reports whether the library's redirector runs (whoever started it).
func (r *Redirector) Running() bool { return cStatus() == 1 }

// Close stops the redirector if this Redirector started it, ends every Events
// channel, and lets New create another Redirector. Closing again does
// nothing and returns nil. While a redirector this Redirector did not start
// keeps running, Close may wait up to 50 ms for the events goroutine to come
// back from its wait in the library.
func (r *Redirector) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	var err error
	if r.runDone != nil {
		err = r.stopLocked("Close")
	}
	close(r.done)
	r.mu.Unlock()

	r.events.wait() // no goroutine of ours calls the library after this
	r.mu.Lock()
	r.sc.free()
	r.mu.Unlock()
	liveMu.Lock()
	if live == r {
		live = nil
	}
	liveMu.Unlock()
	return err
}

// WouldIntercept reports whether a process would be intercepted under the
// configuration in force, running or not. processPath is the executable's
// path, or "" when unknown (then only PID entries can match). The calling
// process is never intercepted.
func (r *Redirector) WouldIntercept(pid int, processPath string) (bool, error) {
	if pid < 0 || uint64(pid) > 0xffffffff {
		return false, goError("WouldIntercept", ErrInvalid, fmt.Sprintf("pid %d is out of range", pid))
	}
	if strings.IndexByte(processPath, 0) >= 0 {
		return false, goError("WouldIntercept", ErrInvalid, "processPath holds a NUL byte")
	}
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return false, ErrClosed
	}
	rc, e := cWouldIntercept(uint32(pid), processPath)
	if rc < 0 {
		return false, opError("WouldIntercept", e)
	}
	return rc == 1, nil
}

// Stats are the library's counters (redirector_stats).
type Stats struct {
	Running         bool
	Packets         uint64 // packets seen
	Rewritten       uint64 // packets rewritten (redirected; ICMP errors about them translated)
	Passed          uint64 // packets passed unchanged
	Held            uint64 // packets held while their owner was unknown
	Dropped         uint64 // packets dropped over the hold limits
	Malformed       uint64 // truncated or malformed (passed unchanged)
	Fragments       uint64 // IP fragments (passed unchanged)
	FlowsActive     uint64 // flow table entries in use
	FlowsRedirected uint64 // connections redirected
	FlowsPassed     uint64 // connections decided not to intercept
	FlowsExpired    uint64 // entries removed (closed or idle)
	TableFull       uint64 // new connections passed: the table was full
	Evictions       uint64 // unestablished entries evicted for new ones
	HoldTimeouts    uint64 // owners never found in time (passed)
	OwnerFacts      uint64 // socket owner facts received
	OwnerQueries    uint64 // socket owner look-ups made
	EventsLost      uint64 // events dropped: the queue was full
	NATConflicts    uint64 // connections passed: no proxy-side port free
	Bypassed        uint64 // packets of bypassed classes (loopback, ...)
	Lookups         uint64 // lookups answered
	LookupMisses    uint64 // lookups that found nothing
	EngineRestarts  uint64 // engine failures survived (since load)
	FlowCapacity    uint64 // flow table size
	BytesPerFlow    uint64 // memory per flow table entry
	// Redirected TCP connections the proxy did not take, once each: its SYN
	// got no answer from the app port within 1 s (dropped on the way: a
	// firewall), or a RST (nothing listening there for it). The C API's
	// redirector_diagnostics names the likely causes.
	RedirectedSynUnanswered uint64
	RedirectedSynRefused    uint64
}

// Stats returns the counters of the running redirector (after Stop: of the
// last run).
func (r *Redirector) Stats() (Stats, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return Stats{}, ErrClosed
	}
	var s Stats
	if rc, e := r.sc.stats(&s); rc != 0 {
		return Stats{}, opError("Stats", e)
	}
	return s, nil
}
