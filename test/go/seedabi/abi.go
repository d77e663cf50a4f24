// Package seedabi drives the library's seed functions from Go through cgo,
// the way the seed's users do, for the tests in abi_test.go.
package seedabi

/*
#cgo CFLAGS: -I${SRCDIR}/../../../include
#cgo linux LDFLAGS: -L${SRCDIR}/../../../build/linux -lwindows_redirector -Wl,-rpath,${SRCDIR}/../../../build/linux
#cgo windows LDFLAGS: -L${SRCDIR}/../../../build/windows -lwindows_redirector
#include <stdlib.h>
#include "windows_redirector.h"
*/
import "C"

import "unsafe"

func Initialize()            { C.initialize_global_config() }
func Start() int32           { return int32(C.start_redirector()) }
func Stop() int32            { return int32(C.stop_redirector()) }
func Status() int32          { return int32(C.get_redirector_status()) }
func SetAppPort(port uint16) { C.update_app_port(C.uint16_t(port)) }
func LastErrorCode() int32   { return int32(C.redirector_last_error_code()) }
func SetConfigNil() int32    { return int32(C.set_redirector_config(nil)) }

func SetConfig(json string) int32 {
	c := C.CString(json)
	defer C.free(unsafe.Pointer(c))
	return int32(C.set_redirector_config(c))
}

func LastError() string {
	var buf [1024]C.char
	C.redirector_last_error(&buf[0], C.size_t(len(buf)))
	return C.GoString(&buf[0])
}

func WouldIntercept(pid uint32) int32 {
	return int32(C.redirector_would_intercept(C.uint32_t(pid), nil))
}
