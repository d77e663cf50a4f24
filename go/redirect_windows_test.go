//go:build windows && (amd64 || arm64)

package redirector

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHelperProcess is the intercepted process of TestRedirectedUnderTheStandIn:
// it waits until its stdin closes.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("WR_TEST_HELPER") != "1" {
		t.Skip("the helper process of TestRedirectedUnderTheStandIn")
	}
	io.Copy(io.Discard, os.Stdin)
}

// A connection redirected by the library under the stand-in WinDivert.dll:
// it plays a script (a socket event and a SYN of a process of ours), the
// library redirects the SYN, and the package reads the event, the lookup
// and the counters from the DLL without cgo.
func TestRedirectedUnderTheStandIn(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	helper := exec.Command(exe, "-test.run=^TestHelperProcess$")
	helper.Env = append(os.Environ(), "WR_TEST_HELPER=1")
	stdin, err := helper.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	defer helper.Wait()
	defer stdin.Close()
	pid := helper.Process.Pid

	client := netip.MustParseAddrPort("198.18.0.1:50000")
	dest := netip.MustParseAddrPort("198.18.0.10:80")
	const appPort = 18095
	script := filepath.Join(t.TempDir(), "script.txt")
	text := fmt.Sprintf("socket connect pid=%d proto=tcp local=%s remote=%s\ndelay 100\npacket out hex=%s\n",
		pid, client, dest, hex.EncodeToString(tcpSYN(client, dest)))
	if err := os.WriteFile(script, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WR_FAKE_WINDIVERT_SCRIPT", script)

	r := open(t, Options{AppPort: appPort, PIDs: []int{pid}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := r.Events(ctx)
	start(t, r)
	var ev Event
	select {
	case ev = <-events:
	case <-time.After(10 * time.Second):
		st, _ := r.Stats()
		t.Fatalf("no event in 10 s; stats %+v", st)
	}
	o := ev.Origin
	if ev.Type != EventOpened || o.Destination != dest || o.Client != client || o.PID != pid ||
		o.Protocol != TCP || o.Direction != Outbound || o.AppPort != appPort || o.FlowID == 0 ||
		o.Peer.Addr() != dest.Addr() {
		t.Fatalf("event %+v", ev)
	}
	if !strings.EqualFold(filepath.Base(strings.ReplaceAll(o.Process, `\`, "/")), filepath.Base(exe)) {
		t.Errorf("Origin.Process %q, want the helper's %s", o.Process, exe)
	}
	got, err := r.LookupAddrPort(TCP, netip.AddrPortFrom(client.Addr(), appPort), o.Peer)
	if err != nil || got != o {
		t.Fatalf("lookup of the proxy's view (peer %s): %+v, %v; want %+v", o.Peer, got, err, o)
	}
	st, err := r.Stats()
	if err != nil || st.FlowsRedirected != 1 || st.Rewritten != 1 || st.Lookups != 1 || st.Packets != 1 {
		t.Fatalf("stats %+v, %v", st, err)
	}
}

// tcpSYN is an IPv4 TCP SYN from src to dst, with its checksums.
func tcpSYN(src, dst netip.AddrPort) []byte {
	p := make([]byte, 40)
	p[0], p[8], p[9] = 0x45, 64, 6 // version and header length, TTL, TCP
	binary.BigEndian.PutUint16(p[2:], 40)
	binary.BigEndian.PutUint16(p[6:], 0x4000) // don't fragment
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], checksum(0, p[:20]))
	tcp := p[20:]
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], 1000) // sequence number
	tcp[12], tcp[13] = 5<<4, 0x02             // header length, SYN
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	pseudo := append(append(append([]byte{}, s[:]...), d[:]...), 0, 6, 0, 20)
	binary.BigEndian.PutUint16(tcp[16:], checksum(sum16(0, pseudo), tcp))
	return p
}

func sum16(acc uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		acc += uint32(b[i])<<8 | uint32(b[i+1])
	}
	return acc
}

func checksum(acc uint32, b []byte) uint16 {
	acc = sum16(acc, b)
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return ^uint16(acc)
}
