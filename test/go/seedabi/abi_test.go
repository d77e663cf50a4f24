package seedabi

import (
	"errors"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
)

// The last error belongs to the OS thread whose call failed: a test that
// reads it after a separate cgo call stays on one thread (as the header says
// a Go caller of the C functions must).

func TestSeedReturnCodes(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	Initialize()
	Initialize() // a second call changes nothing
	if got := Stop(); got != -1 {
		t.Fatalf("stop when stopped: %d, want -1", got)
	}
	if got := SetConfigNil(); got != -1 {
		t.Fatalf("NULL config: %d, want -1", got)
	}
	if got := SetConfig(`{"intercept_pids": [1,`); got != -2 {
		t.Fatalf("truncated JSON: %d, want -2", got)
	}
	if !strings.Contains(LastError(), "end of input") {
		t.Fatalf("last error %q should say where the JSON ended", LastError())
	}
	if got := SetConfig("{\"description\":\"\xff\"}"); got != -3 {
		t.Fatalf("not UTF-8: %d, want -3", got)
	}
	if got := SetConfig(`{"intercept_pids":[4201234,4205678],"description":"Intercept specific processes"}`); got != 0 {
		t.Fatalf("seed config: %d (%s)", got, LastError())
	}
	if WouldIntercept(4201234) != 1 || WouldIntercept(4205678) != 1 || WouldIntercept(9) != 0 {
		t.Fatal("the seed config is not in force")
	}
	if Status() != 0 {
		t.Fatal("status should be 0 before start")
	}
}

func TestStartStop(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	SetAppPort(8080)
	if SetConfig(`{"intercept_pids":[4201234,4205678],"description":"x"}`) != 0 {
		t.Fatal(LastError())
	}
	rc := Start()
	if runtime.GOOS == "windows" {
		// No WinDivert here: start must fail cleanly and say so.
		if rc != -2 || !strings.Contains(LastError(), "WinDivert driver not found") {
			t.Fatalf("start without WinDivert: %d %q", rc, LastError())
		}
		if Status() != 0 {
			t.Fatal("status after a failed start")
		}
		return
	}
	if rc != 0 {
		t.Fatalf("start: %d (%s)", rc, LastError())
	}
	if Status() != 1 || Start() != -1 {
		t.Fatal("running status or second start")
	}
	if Stop() != 0 || Status() != 0 || Stop() != -1 {
		t.Fatal("stop")
	}
}

// The wasm2c runtime installs SIGSEGV/SIGBUS handlers (a vectored exception
// handler on Windows) unless built without them. With them, Go's own nil
// dereference handling breaks. The library is loaded and started here.
func TestGoStillRecoversNilDereference(t *testing.T) {
	SetAppPort(8080)
	started := Start() == 0
	defer func() {
		if started {
			Stop()
		}
	}()
	debug.SetPanicOnFault(false)
	for i := 0; i < 3; i++ {
		err := derefNil()
		var re runtime.Error
		if !errors.As(err, &re) || !strings.Contains(err.Error(), "nil pointer dereference") {
			t.Fatalf("recovered %v, want a nil pointer dereference runtime error", err)
		}
	}
	// And from other goroutines at once, while the library is busy.
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				if err := derefNil(); err == nil {
					t.Error("no panic")
				}
				SetConfig(`{"intercept_pids":[1]}`)
			}
		}()
	}
	wg.Wait()
}

type node struct{ next *node }

//go:noinline
func derefNil() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err, _ = r.(error)
		}
	}()
	var n *node
	_ = n.next.next
	return nil
}
