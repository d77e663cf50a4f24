//go:build cgo && linux

package redirector

import (
	"net"
	"os"
	"syscall"
	"testing"
)

func TestDialerExcludesItsSockets(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("marking sockets needs CAP_NET_ADMIN")
	}
	c := dialListener(t, open(t, Options{AppPort: 18093}))
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mark int
	var gerr error
	if err := raw.Control(func(fd uintptr) { mark, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK) }); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	if mark&0x10000000 == 0 {
		t.Fatalf("SO_MARK is %#x: the exclusion bit is not set", mark)
	}
}
