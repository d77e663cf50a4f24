//go:build linux && cgo

package redirector

// Every call into the C library on Linux is in this file (on Windows:
// capi_windows.go, without cgo). The functions here are thin: they convert
// arguments and results and hold no locks. The library's last error belongs
// to the OS thread that failed, and Go may move a goroutine to another thread
// between two cgo calls, so each call that can fail is made by a C helper
// below that reads the error's code and text in the same C call.
//
// The library and its header are found through pkg-config
// (windows_redirector.pc, which the library's install writes; in a checkout,
// `npm run build` writes build/linux/windows_redirector-uninstalled.pc for
// PKG_CONFIG_PATH=build/linux).

/*
#cgo pkg-config: windows_redirector
#include <stdlib.h>
#include <string.h>
#include "windows_redirector.h"

// A helper's result: the call's return code and, when it failed, this
// thread's last error, which is that call's: its code and its text (malloc'd,
// NULL when out of memory; the Go side frees it). Returned by value so that
// nothing the Go side passes to C holds a pointer: cgo then has no argument
// to check on each call (runtime.cgoCheckPointer, ~100 instructions a lookup).
typedef struct {
  int32_t rc;
  int32_t code; // 0 when the call did not fail
  char *text;
} wr_go_res;

// rc, with this thread's last error when the call failed.
static wr_go_res wr_go_result(int32_t rc, int failed) {
  wr_go_res r = {rc, 0, NULL};
  if (!failed) return r;
  r.code = redirector_last_error_code();
  int32_t n = redirector_last_error(NULL, 0);
  r.text = malloc((size_t)n + 1);
  if (r.text) redirector_last_error(r.text, (size_t)n + 1);
  return r;
}

static wr_go_res wr_go_start(void) {
  int32_t rc = start_redirector();
  return wr_go_result(rc, rc != 0);
}

static wr_go_res wr_go_stop(void) {
  int32_t rc = stop_redirector();
  return wr_go_result(rc, rc != 0);
}

static wr_go_res wr_go_set_config(const char *json) {
  int32_t rc = set_redirector_config(json);
  return wr_go_result(rc, rc != 0);
}

static wr_go_res wr_go_set_app_port(uint16_t port) {
  int32_t rc = redirector_set_app_port(port);
  return wr_go_result(rc, rc != 0);
}

static wr_go_res wr_go_set_windivert_path(const char *dir) {
  int32_t rc = redirector_set_windivert_path(dir);
  return wr_go_result(rc, rc != 0);
}

static wr_go_res wr_go_would_intercept(uint32_t pid, const char *path) {
  int32_t rc = redirector_would_intercept(pid, path);
  return wr_go_result(rc, rc < 0);
}

// The C memory a Redirector passes to lookups and statistics, allocated once
// so a lookup allocates nothing on either side of the call.
typedef struct {
  redirector_endpoint peer;
  redirector_endpoint local;
  redirector_origin origin;
  redirector_stats stats;
} wr_go_scratch;

static wr_go_scratch *wr_go_scratch_new(void) {
  wr_go_scratch *s = calloc(1, sizeof *s);
  if (s) {
    s->origin.size = sizeof s->origin;
    s->stats.size = sizeof s->stats;
  }
  return s;
}

// The C memory of the goroutine that takes events.
static redirector_event *wr_go_event_new(void) {
  redirector_event *e = calloc(1, sizeof *e);
  if (e) e->size = sizeof *e;
  return e;
}

static wr_go_res wr_go_next_event(redirector_event *ev, uint32_t timeout_ms) {
  ev->size = sizeof *ev;
  int32_t rc = redirector_next_event(ev, timeout_ms);
  return wr_go_result(rc, rc != 0 && rc != REDIRECTOR_ENOEVENT);
}

static wr_go_res wr_go_lookup(wr_go_scratch *s, int32_t protocol) {
  s->origin.size = sizeof s->origin;
  int32_t rc = redirector_lookup(protocol, &s->peer, &s->local, &s->origin);
  return wr_go_result(rc, rc != 0);
}

static wr_go_res wr_go_stats(wr_go_scratch *s) {
  s->stats.size = sizeof s->stats;
  int32_t rc = redirector_get_stats(&s->stats);
  return wr_go_result(rc, rc != 0);
}

// For tests: calls with a struct size one byte short, so the library's error
// text tells the size it expects.
static wr_go_res wr_go_lookup_short(wr_go_scratch *s) {
  s->origin.size = sizeof s->origin - 1;
  int32_t rc = redirector_lookup(REDIRECTOR_TCP, &s->peer, &s->local, &s->origin);
  return wr_go_result(rc, rc != 0);
}

// For tests: a failure of other code in the process (its error is left unread).
static void wr_go_fail_elsewhere(void) { set_redirector_config("{"); }
*/
import "C"

import (
	"net/netip"
	"time"
	"unsafe"
)

// takeResult converts a helper's result and frees its error text.
func takeResult(r C.wr_go_res) (int32, cError) {
	if r.text == nil {
		return int32(r.rc), cError{code: Error(r.code)}
	}
	e := cError{code: Error(r.code), text: C.GoString(r.text)}
	C.free(unsafe.Pointer(r.text))
	return int32(r.rc), e
}

func cStart() (int32, cError) { return takeResult(C.wr_go_start()) }

func cStop() (int32, cError) { return takeResult(C.wr_go_stop()) }

func cStatus() int32 { return int32(C.get_redirector_status()) }

func cSetAppPort(port uint16) (int32, cError) {
	return takeResult(C.wr_go_set_app_port(C.uint16_t(port)))
}

func cSetConfig(json string) (int32, cError) {
	s := C.CString(json)
	defer C.free(unsafe.Pointer(s))
	return takeResult(C.wr_go_set_config(s))
}

// cSetWinDivertPath passes "" as NULL (the default search).
func cSetWinDivertPath(dir string) (int32, cError) {
	var s *C.char
	if dir != "" {
		s = C.CString(dir)
		defer C.free(unsafe.Pointer(s))
	}
	return takeResult(C.wr_go_set_windivert_path(s))
}

// cWouldIntercept passes "" as NULL (path unknown).
func cWouldIntercept(pid uint32, path string) (int32, cError) {
	var s *C.char
	if path != "" {
		s = C.CString(path)
		defer C.free(unsafe.Pointer(s))
	}
	return takeResult(C.wr_go_would_intercept(C.uint32_t(pid), s))
}

// cFailElsewhere is a failure of other code in the process, on whatever
// thread runs it (tests).
func cFailElsewhere() { C.wr_go_fail_elsewhere() }

func cStrerror(code int32) string { return C.GoString(C.redirector_strerror(C.int32_t(code))) }

func cVersion() string { return C.GoString(C.redirector_version()) }

func cExcludeSocket(fd uintptr) int32 { return int32(C.redirector_exclude_socket(C.intptr_t(fd))) }

func cInjectFault(which int32) int32 { return int32(C.redirector_debug_inject_fault(C.int32_t(which))) }

// The C values of the error codes, for the test that keeps errors.go equal to
// the header.
func cErrorValues() map[Error]int32 {
	return map[Error]int32{
		ErrAlreadyRunning: C.REDIRECTOR_EALREADY,
		ErrNotRunning:     C.REDIRECTOR_ENOTRUNNING,
		ErrNull:           C.REDIRECTOR_ENULL,
		ErrBadConfig:      C.REDIRECTOR_ECONFIG,
		ErrNotUTF8:        C.REDIRECTOR_EUTF8,
		ErrInit:           C.REDIRECTOR_EINIT,
		ErrNotFound:       C.REDIRECTOR_ENOTFOUND,
		ErrInvalid:        C.REDIRECTOR_EINVAL,
		ErrEngine:         C.REDIRECTOR_EENGINE,
		ErrNoEvent:        C.REDIRECTOR_ENOEVENT,
		ErrNoMemory:       C.REDIRECTOR_ENOMEM,
	}
}

// The C values of the other constants the package mirrors.
func cConstants() map[string]int64 {
	return map[string]int64{
		"TCP":          C.REDIRECTOR_TCP,
		"UDP":          C.REDIRECTOR_UDP,
		"Outbound":     C.REDIRECTOR_OUTBOUND,
		"Inbound":      C.REDIRECTOR_INBOUND,
		"EventOpened":  C.REDIRECTOR_EVENT_OPENED,
		"EventClosed":  C.REDIRECTOR_EVENT_CLOSED,
		"FaultConfig":  C.REDIRECTOR_FAULT_CONFIG,
		"FaultPackets": C.REDIRECTOR_FAULT_PACKETS,
		"FaultMemory":  C.REDIRECTOR_FAULT_MEMORY,
	}
}

// scratch is C memory for one caller at a time (the Redirector holds its
// mutex while using it).
type scratch struct{ p *C.wr_go_scratch }

func newScratch() scratch { return scratch{C.wr_go_scratch_new()} }

func (s scratch) ok() bool { return s.p != nil }

func (s *scratch) free() {
	C.free(unsafe.Pointer(s.p))
	s.p = nil
}

// The C structs as the Go mirrors of abi.go, which have their layout (the
// sizes are checked here, every offset by TestLayoutEqualsTheHeader).
var (
	_ [unsafe.Sizeof(C.redirector_endpoint{}) - unsafe.Sizeof(rawEndpoint{})]byte
	_ [unsafe.Sizeof(rawEndpoint{}) - unsafe.Sizeof(C.redirector_endpoint{})]byte
	_ [unsafe.Sizeof(C.redirector_origin{}) - unsafe.Sizeof(rawOrigin{})]byte
	_ [unsafe.Sizeof(rawOrigin{}) - unsafe.Sizeof(C.redirector_origin{})]byte
	_ [unsafe.Sizeof(C.redirector_event{}) - unsafe.Sizeof(rawEvent{})]byte
	_ [unsafe.Sizeof(rawEvent{}) - unsafe.Sizeof(C.redirector_event{})]byte
	_ [unsafe.Sizeof(C.redirector_stats{}) - unsafe.Sizeof(rawStats{})]byte
	_ [unsafe.Sizeof(rawStats{}) - unsafe.Sizeof(C.redirector_stats{})]byte
)

func goEndpoint(ep *C.redirector_endpoint) *rawEndpoint { return (*rawEndpoint)(unsafe.Pointer(ep)) }

func goOrigin(o *C.redirector_origin) *rawOrigin { return (*rawOrigin)(unsafe.Pointer(o)) }

// cLayout is the header's size and offset of each field the mirrors have,
// by the mirrors' names (for the test).
func cLayout() map[string]uintptr {
	var ep C.redirector_endpoint
	var o C.redirector_origin
	var ev C.redirector_event
	var st C.redirector_stats
	return map[string]uintptr{
		"endpoint":                   unsafe.Sizeof(ep),
		"endpoint.family":            unsafe.Offsetof(ep.family),
		"endpoint.port":              unsafe.Offsetof(ep.port),
		"endpoint.addr":              unsafe.Offsetof(ep.addr),
		"origin":                     unsafe.Sizeof(o),
		"origin.protocol":            unsafe.Offsetof(o.protocol),
		"origin.direction":           unsafe.Offsetof(o.direction),
		"origin.pid":                 unsafe.Offsetof(o.pid),
		"origin.destination":         unsafe.Offsetof(o.destination),
		"origin.client":              unsafe.Offsetof(o.client),
		"origin.peer":                unsafe.Offsetof(o.peer),
		"origin.appPort":             unsafe.Offsetof(o.app_port),
		"origin.flowID":              unsafe.Offsetof(o.flow_id),
		"origin.bytesUp":             unsafe.Offsetof(o.bytes_up),
		"origin.bytesDown":           unsafe.Offsetof(o.bytes_down),
		"origin.processPath":         unsafe.Offsetof(o.process_path),
		"event":                      unsafe.Sizeof(ev),
		"event.typ":                  unsafe.Offsetof(ev._type),
		"event.timeMS":               unsafe.Offsetof(ev.time_ms),
		"event.origin":               unsafe.Offsetof(ev.origin),
		"stats":                      unsafe.Sizeof(st),
		"stats.running":              unsafe.Offsetof(st.running),
		"stats.packets":              unsafe.Offsetof(st.packets),
		"stats.bytesPerFlow":         unsafe.Offsetof(st.bytes_per_flow),
		"stats.redirectedSynRefused": unsafe.Offsetof(st.redirected_syn_refused),
	}
}

// lookup asks the library (which understands IPv4-mapped addresses).
func (s scratch) lookup(proto Protocol, peer, local netip.AddrPort, out *Origin) (int32, cError) {
	goEndpoint(&s.p.peer).set(peer)
	goEndpoint(&s.p.local).set(local)
	rc, e := takeResult(C.wr_go_lookup(s.p, C.int32_t(proto)))
	if rc == 0 {
		goOrigin(&s.p.origin).get(out)
	}
	return rc, e
}

// lookupShort is lookup with out->size one byte short (tests).
func (s scratch) lookupShort() (int32, cError) {
	return takeResult(C.wr_go_lookup_short(s.p))
}

func (s scratch) stats(out *Stats) (int32, cError) {
	if rc, e := takeResult(C.wr_go_stats(s.p)); rc != 0 {
		return rc, e
	}
	*out = (*rawStats)(unsafe.Pointer(&s.p.stats)).get()
	return 0, cError{}
}

// eventBuf is the C memory of the one goroutine that takes events.
type eventBuf struct{ p *C.redirector_event }

func newEventBuf() eventBuf { return eventBuf{C.wr_go_event_new()} }

func (b eventBuf) ok() bool { return b.p != nil }

func (b *eventBuf) free() {
	C.free(unsafe.Pointer(b.p))
	b.p = nil
}

// next takes the oldest event, waiting up to timeout for one.
func (b eventBuf) next(timeout time.Duration, out *Event) (int32, cError) {
	rc, e := takeResult(C.wr_go_next_event(b.p, C.uint32_t(timeout/time.Millisecond)))
	if rc == 0 {
		(*rawEvent)(unsafe.Pointer(b.p)).get(out)
	}
	return rc, e
}

// loadLibrary has nothing to do: the library was linked at build time and
// the dynamic loader found it before main.
func loadLibrary() error { return nil }

// setLibraryPath: on Linux the build decides where the library is.
func setLibraryPath(string) error { return nil }
