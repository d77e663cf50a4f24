//go:build (linux && cgo) || (windows && (amd64 || arm64))

package redirector

import (
	"errors"
	"strconv"
)

// Error is a library error code. Its values equal the C REDIRECTOR_E* codes
// of windows_redirector.h, so
//
//	errors.Is(err, redirector.ErrAlreadyRunning)
//
// is true for any error this package returns for that code. The errors the
// package returns are *OpError values that carry the library's own text.
type Error int32

// The codes of windows_redirector.h (stable, never reused).
const (
	ErrAlreadyRunning Error = -101 // the redirector is already running
	ErrNotRunning     Error = -102 // the redirector is not running
	ErrNull           Error = -103 // a required pointer argument is NULL
	ErrBadConfig      Error = -104 // the configuration is not valid (the text names the field)
	ErrNotUTF8        Error = -105 // a text is not valid UTF-8
	ErrInit           Error = -106 // could not start (WinDivert missing, not elevated, no app port, ...)
	ErrNotFound       Error = -107 // no redirected connection matches
	ErrInvalid        Error = -108 // an argument is out of range
	ErrEngine         Error = -109 // the engine failed inside and was rebuilt; the call had no effect
	ErrNoEvent        Error = -110 // no event is waiting
	ErrNoMemory       Error = -111 // out of memory; the call had no effect
)

// The header's descriptions (redirector_strerror); a test keeps them equal.
var errorText = map[Error]string{
	ErrAlreadyRunning: "the redirector is already running",
	ErrNotRunning:     "the redirector is not running",
	ErrNull:           "a required pointer argument is NULL",
	ErrBadConfig:      "the configuration is not valid JSON or a field is invalid",
	ErrNotUTF8:        "the text is not valid UTF-8",
	ErrInit:           "the redirector could not start (see redirector_last_error)",
	ErrNotFound:       "no redirected connection matches",
	ErrInvalid:        "an argument is out of range (a struct size, length or selector)",
	ErrEngine:         "the engine failed inside and was rebuilt; the call had no effect",
	ErrNoEvent:        "no event is waiting",
	ErrNoMemory:       "out of memory; the call had no effect",
}

func (e Error) Error() string {
	if s, ok := errorText[e]; ok {
		return s
	}
	return "unknown error code " + strconv.Itoa(int(e))
}

// OpError is a failed operation: the Go method, the library's code and the
// library's text (which names the C function and, for a configuration, the
// field). errors.Is(err, code) compares Code.
type OpError struct {
	Op   string // the Go method, e.g. "Start"
	Code Error
	Msg  string // the library's text, e.g. "start_redirector: WinDivert driver not found ..."
}

func (e *OpError) Error() string { return "redirector: " + e.Op + ": " + e.Msg }

// Unwrap returns the Error code.
func (e *OpError) Unwrap() error { return e.Code }

// Errors of the Go package itself (no C code corresponds to them).
var (
	// ErrInUse: another Redirector is open in this process. The library is
	// process-global, so only one Redirector may be open at a time.
	ErrInUse = errors.New("redirector: another Redirector is open in this process (the library is " +
		"process-global: Close it first)")
	// ErrClosed: the Redirector was closed.
	ErrClosed = errors.New("redirector: the Redirector is closed")
)

// cError is a failed call's last error, read on the thread that failed
// (code 0 and "" when the call did not fail).
type cError struct {
	code Error
	text string
}

// goError is a failure found before calling the library, with the code the
// library would give.
func goError(op string, code Error, msg string) error {
	return &OpError{Op: op, Code: code, Msg: msg}
}

// opError is the error of a failed library call: e is its last error, read
// on the thread that failed (capi.go, capi_windows.go), so code and text are
// the call's own. For a
// seed function, whose -1/-2/-3 do not name a unique cause, the code says
// which.
func opError(op string, e cError) error {
	msg := e.text
	if msg == "" {
		msg = e.code.Error() // the text could not be copied (out of memory)
	}
	return &OpError{Op: op, Code: e.code, Msg: msg}
}
