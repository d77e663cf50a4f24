//go:build windows && (amd64 || arm64)

package redirector

// Every call into the library on Windows is in this file (on Linux:
// capi.go, with cgo). There is no cgo here: windows_redirector.dll is loaded
// at run time, on first use (New or Version), and called through
// syscall.SyscallN, so `CGO_ENABLED=0 GOOS=windows go build` works.
//
// The library's last error belongs to the OS thread that failed, and Go may
// move a goroutine to another thread between two calls: each call that can
// fail runs with the goroutine locked to its thread (runtime.LockOSThread)
// until the error, if any, has been read.

import (
	"debug/pe"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
)

const dllName = "windows_redirector.dll"

// dll is the loaded library: its file and the address of each export the
// package calls.
type dll struct {
	path   string
	handle windows.Handle

	start, stop, setConfig, status, setAppPort, setWinDivertPath, wouldIntercept uintptr
	lookup, nextEvent, getStats, lastError, lastErrorCode, strerror, version     uintptr
	excludeSocket, injectFault                                                   uintptr
}

// exports lists the exports the package needs and where each goes.
func (d *dll) exports() []struct {
	name string
	addr *uintptr
} {
	return []struct {
		name string
		addr *uintptr
	}{
		{"start_redirector", &d.start}, {"stop_redirector", &d.stop},
		{"set_redirector_config", &d.setConfig}, {"get_redirector_status", &d.status},
		{"redirector_set_app_port", &d.setAppPort}, {"redirector_set_windivert_path", &d.setWinDivertPath},
		{"redirector_would_intercept", &d.wouldIntercept}, {"redirector_lookup", &d.lookup},
		{"redirector_next_event", &d.nextEvent}, {"redirector_get_stats", &d.getStats},
		{"redirector_last_error", &d.lastError}, {"redirector_last_error_code", &d.lastErrorCode},
		{"redirector_strerror", &d.strerror}, {"redirector_version", &d.version},
		{"redirector_exclude_socket", &d.excludeSocket}, {"redirector_debug_inject_fault", &d.injectFault},
	}
}

var (
	libMu   sync.Mutex // held while loading, and by setLibraryPath
	libPath string     // SetLibraryPath's file ("" when not called)
	loaded  atomic.Pointer[dll]
)

// lib is the loaded library (the caller made sure it is: a Redirector
// exists only after New loaded it).
func lib() *dll { return loaded.Load() }

func setLibraryPath(path string) error {
	if path != "" {
		abs, err := filepath.Abs(path)
		if err != nil {
			return goError("SetLibraryPath", ErrInvalid, err.Error())
		}
		path = abs
		if fi, err := os.Stat(path); err == nil && fi.IsDir() {
			path = filepath.Join(path, dllName)
		}
	}
	libMu.Lock()
	defer libMu.Unlock()
	if d := loaded.Load(); d != nil && path != "" && !strings.EqualFold(d.path, path) {
		return goError("SetLibraryPath", ErrInvalid, fmt.Sprintf("%s is already loaded from %s: call SetLibraryPath "+
			"before the first New or Version", dllName, d.path))
	}
	libPath = path
	return nil
}

// loadLibrary loads the library on first use: beside the program first,
// then where SetLibraryPath said. A failure is not kept: a later call tries
// again (after SetLibraryPath, for one).
func loadLibrary() error {
	if loaded.Load() != nil {
		return nil
	}
	libMu.Lock()
	defer libMu.Unlock()
	if loaded.Load() != nil {
		return nil
	}
	d, err := loadFirst(libraryCandidates())
	if err != nil {
		return err
	}
	loaded.Store(d)
	return nil
}

// candidate is a place the library may be, and why it is looked for there.
type candidate struct{ path, why string }

// libraryCandidates: beside the program, then SetLibraryPath's (libMu held).
func libraryCandidates() []candidate {
	var c []candidate
	if exe, err := os.Executable(); err == nil {
		c = append(c, candidate{filepath.Join(filepath.Dir(exe), dllName), "beside the program"})
	}
	if libPath != "" {
		c = append(c, candidate{libPath, "SetLibraryPath"})
	}
	return c
}

// loadFirst loads the first candidate that exists. Only absolute paths are
// loaded, and the DLL's own imports are searched for only in its folder and
// System32: never the current folder or PATH.
func loadFirst(cands []candidate) (*dll, error) {
	var tried []string
	for _, c := range cands {
		if _, err := os.Stat(c.path); err != nil {
			tried = append(tried, fmt.Sprintf("%s (%s)", c.path, c.why))
			continue
		}
		return openDLL(c.path)
	}
	return nil, fmt.Errorf("%s not found: looked for %s; put it beside the program or call "+
		"redirector.SetLibraryPath", dllName, strings.Join(tried, " and "))
}

func openDLL(path string) (*dll, error) {
	h, err := windows.LoadLibraryEx(path, 0,
		windows.LOAD_LIBRARY_SEARCH_DLL_LOAD_DIR|windows.LOAD_LIBRARY_SEARCH_SYSTEM32)
	if err != nil {
		if errors.Is(err, windows.ERROR_BAD_EXE_FORMAT) {
			return nil, fmt.Errorf("%s is not a DLL for this program (windows/%s)%s: %v", path, runtime.GOARCH,
				dllMachine(path), err)
		}
		return nil, fmt.Errorf("%s could not be loaded: %v", path, err)
	}
	d := &dll{path: path, handle: h}
	var missing []string
	for _, e := range d.exports() {
		if *e.addr, err = windows.GetProcAddress(h, e.name); err != nil {
			missing = append(missing, e.name)
		}
	}
	if len(missing) > 0 {
		version := "of an unknown version"
		if d.version != 0 {
			version = "version " + goString(call(d.version))
		}
		windows.FreeLibrary(h)
		return nil, fmt.Errorf("%s (%s) lacks %s, which this package calls: it is older than the package; "+
			"use the %s of the same release", path, version, strings.Join(missing, ", "), dllName)
	}
	return d, nil
}

// dllMachine says which architecture a PE file is for, when it can tell.
func dllMachine(path string) string {
	f, err := pe.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	names := map[uint16]string{pe.IMAGE_FILE_MACHINE_I386: "386", pe.IMAGE_FILE_MACHINE_AMD64: "amd64",
		pe.IMAGE_FILE_MACHINE_ARM64: "arm64", pe.IMAGE_FILE_MACHINE_ARMNT: "arm"}
	if n, ok := names[f.Machine]; ok {
		return ", it is for windows/" + n
	}
	return fmt.Sprintf(", it is for machine type %#x", f.Machine)
}

// call calls an export that takes no pointer.
func call(proc uintptr, args ...uintptr) uintptr {
	r, _, _ := syscall.SyscallN(proc, args...)
	return r
}

// goString copies a NUL-terminated string the library returned.
func goString(p uintptr) string { return windows.BytePtrToString(*(**byte)(unsafe.Pointer(&p))) }

// cstr is s with a NUL, for the library (s holds no NUL: the callers check).
func cstr(s string) []byte { return append([]byte(s), 0) }

// result is rc and, when the call failed, this thread's last error, which is
// that call's: the caller has kept its goroutine on the thread since.
func result(rc int32, failed bool) (int32, cError) {
	if !failed {
		return rc, cError{}
	}
	d := lib()
	e := cError{code: Error(int32(call(d.lastErrorCode)))}
	var small [256]byte // most texts fit: no allocation but the string's
	buf := small[:]
	if n := int(int32(call(d.lastError, 0, 0))); n >= len(buf) {
		buf = make([]byte, n+1)
	}
	syscall.SyscallN(d.lastError, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
	e.text = cString(buf)
	return rc, e
}

func cStart() (int32, cError) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	rc := int32(call(lib().start))
	return result(rc, rc != 0)
}

func cStop() (int32, cError) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	rc := int32(call(lib().stop))
	return result(rc, rc != 0)
}

func cStatus() int32 { return int32(call(lib().status)) }

func cSetAppPort(port uint16) (int32, cError) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	rc := int32(call(lib().setAppPort, uintptr(port)))
	return result(rc, rc != 0)
}

func cSetConfig(json string) (int32, cError) {
	s := cstr(json)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r, _, _ := syscall.SyscallN(lib().setConfig, uintptr(unsafe.Pointer(&s[0])))
	rc := int32(r)
	return result(rc, rc != 0)
}

// cSetWinDivertPath passes "" as NULL (the default search).
func cSetWinDivertPath(dir string) (int32, cError) {
	var s []byte
	if dir != "" {
		s = cstr(dir)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r, _, _ := syscall.SyscallN(lib().setWinDivertPath, uintptr(unsafe.Pointer(unsafe.SliceData(s))))
	rc := int32(r)
	return result(rc, rc != 0)
}

// cWouldIntercept passes "" as NULL (path unknown).
func cWouldIntercept(pid uint32, path string) (int32, cError) {
	var s []byte
	if path != "" {
		s = cstr(path)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r, _, _ := syscall.SyscallN(lib().wouldIntercept, uintptr(pid), uintptr(unsafe.Pointer(unsafe.SliceData(s))))
	rc := int32(r)
	return result(rc, rc < 0)
}

// cFailElsewhere is a failure of other code in the process, on whatever
// thread runs it (tests).
func cFailElsewhere() {
	s := cstr("{")
	syscall.SyscallN(lib().setConfig, uintptr(unsafe.Pointer(&s[0])))
}

func cStrerror(code int32) string { return goString(call(lib().strerror, uintptr(code))) }

func cVersion() string { return goString(call(lib().version)) }

func cExcludeSocket(fd uintptr) int32 { return int32(call(lib().excludeSocket, fd)) }

func cInjectFault(which int32) int32 { return int32(call(lib().injectFault, uintptr(which))) }

// scratch is the memory a Redirector passes to lookups and statistics (one
// caller at a time: the Redirector holds its mutex), allocated once so a
// lookup allocates nothing.
type scratch struct{ p *winScratch }

type winScratch struct {
	peer, local rawEndpoint
	origin      rawOrigin
	stats       rawStats
}

func newScratch() scratch { return scratch{new(winScratch)} }

func (s scratch) ok() bool { return s.p != nil }

func (s *scratch) free() { s.p = nil }

// lookup asks the library (which understands IPv4-mapped addresses).
func (s scratch) lookup(proto Protocol, peer, local netip.AddrPort, out *Origin) (int32, cError) {
	return s.lookupSized(proto, peer, local, rawOriginSize, out)
}

// lookupShort is lookup with out->size one byte short (tests).
func (s scratch) lookupShort() (int32, cError) {
	return s.lookupSized(TCP, netip.AddrPort{}, netip.AddrPort{}, rawOriginSize-1, nil)
}

func (s scratch) lookupSized(proto Protocol, peer, local netip.AddrPort, size uint32, out *Origin) (int32, cError) {
	p := s.p
	p.peer.set(peer)
	p.local.set(local)
	p.origin.size = size
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r, _, _ := syscall.SyscallN(lib().lookup, uintptr(proto), uintptr(unsafe.Pointer(&p.peer)),
		uintptr(unsafe.Pointer(&p.local)), uintptr(unsafe.Pointer(&p.origin)))
	if rc := int32(r); rc != 0 {
		return result(rc, true)
	}
	if out != nil {
		p.origin.get(out)
	}
	return 0, cError{}
}

func (s scratch) stats(out *Stats) (int32, cError) {
	p := s.p
	p.stats.size = rawStatsSize
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r, _, _ := syscall.SyscallN(lib().getStats, uintptr(unsafe.Pointer(&p.stats)))
	if rc := int32(r); rc != 0 {
		return result(rc, true)
	}
	*out = p.stats.get()
	return 0, cError{}
}

// eventBuf is the memory of the one goroutine that takes events.
type eventBuf struct{ p *rawEvent }

func newEventBuf() eventBuf { return eventBuf{new(rawEvent)} }

func (b eventBuf) ok() bool { return b.p != nil }

func (b *eventBuf) free() { b.p = nil }

// next takes the oldest event, waiting up to timeout for one.
func (b eventBuf) next(timeout time.Duration, out *Event) (int32, cError) {
	b.p.size = rawEventSize
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r, _, _ := syscall.SyscallN(lib().nextEvent, uintptr(unsafe.Pointer(b.p)), uintptr(timeout/time.Millisecond))
	rc := int32(r)
	if rc == 0 {
		b.p.get(out)
	}
	return result(rc, rc != 0 && Error(rc) != ErrNoEvent)
}
