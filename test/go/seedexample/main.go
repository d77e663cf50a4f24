// A program of our own that makes the same calls, in the same order, as the
// seed README's "Go Integration Example", with the seed's own six-function
// header (windows_redirector.h here) and its link flags; only the #cgo lines
// that say where the library is differ. It prints each result instead of
// panicking, so a test can check them.
package main

/*
#cgo CFLAGS: -I.
#cgo linux LDFLAGS: -L${SRCDIR}/../../../build/linux -lwindows_redirector -Wl,-rpath,${SRCDIR}/../../../build/linux
#cgo windows LDFLAGS: -L${SRCDIR}/../../../build/windows -lwindows_redirector -lws2_32 -lkernel32 -ladvapi32 -luserenv -lntdll

#include "windows_redirector.h"
#include <stdlib.h>
*/
import "C"
import (
	"encoding/json"
	"fmt"
	"os"
	"unsafe"
)

type RedirectorConfig struct {
	InterceptPIDs []uint32 `json:"intercept_pids"`
	Description   string   `json:"description"`
}

func main() {
	C.initialize_global_config()
	C.update_app_port(C.uint16_t(8080))

	cfg, _ := json.Marshal(RedirectorConfig{InterceptPIDs: []uint32{1234, 5678}, Description: "Intercept specific processes"})
	cJSON := C.CString(string(cfg))
	defer C.free(unsafe.Pointer(cJSON))
	fmt.Printf("set_redirector_config=%d\n", int32(C.set_redirector_config(cJSON)))

	// A nil slice marshals as null, which must be accepted too.
	cfg, _ = json.Marshal(RedirectorConfig{})
	cNil := C.CString(string(cfg))
	defer C.free(unsafe.Pointer(cNil))
	fmt.Printf("set_redirector_config(null pids)=%d\n", int32(C.set_redirector_config(cNil)))
	fmt.Printf("set_redirector_config=%d\n", int32(C.set_redirector_config(cJSON)))

	start := int32(C.start_redirector())
	fmt.Printf("start_redirector=%d\n", start)
	fmt.Printf("get_redirector_status=%d\n", int32(C.get_redirector_status()))
	fmt.Printf("stop_redirector=%d\n", int32(C.stop_redirector()))
	fmt.Printf("get_redirector_status=%d\n", int32(C.get_redirector_status()))
	if len(os.Args) > 1 {
		fmt.Println("done")
	}
}
