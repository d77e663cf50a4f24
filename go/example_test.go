//go:build (linux && cgo) || (windows && (amd64 || arm64))

package redirector_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"
	"os/exec"

	redirector "windows-redirector/go/redirector"
)

// Accept redirected connections and ask where each was going.
func ExampleRedirector_Listen() {
	r, err := redirector.New(redirector.Options{Intercept: []string{"curl"}})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	ln, err := r.Listen("tcp", ":0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	r.SetAppPort(ln.Port())
	if err := r.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	for {
		c, err := ln.AcceptRedirected() // only redirected connections: direct ones are closed
		if err != nil {
			return
		}
		o := c.Origin()
		fmt.Printf("%s (PID %d) was going to %s\n", o.Process, o.PID, o.Destination)
		c.Close()
	}
}

// Look up a datagram received on the app port.
func ExampleRedirector_LookupUDP() {
	r, err := redirector.New(redirector.Options{AppPort: 5353, Protocols: []redirector.Protocol{redirector.UDP}})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{Port: 5353})
	if err != nil {
		log.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 65535)
	n, peer, err := pc.ReadFrom(buf)
	if err != nil {
		log.Fatal(err)
	}
	o, err := r.LookupUDP(pc.LocalAddr(), peer)
	if errors.Is(err, redirector.ErrNotFound) {
		return // not a redirected datagram
	}
	fmt.Printf("%d bytes for %s\n", n, o.Destination)
}

// A test agent that runs a command and intercepts it and everything it
// starts (Options.Trees): its own PID's tree, so the command's first
// connection is already redirected; the agent itself never is.
func ExampleOptions_trees() {
	r, err := redirector.New(redirector.Options{AppPort: 8080, Trees: []int{os.Getpid()}})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	ln, err := r.Listen("tcp", ":8080") // serve it as in the Listen example
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	if err := r.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	// go test runs a test binary; its connections, and those of anything
	// it starts, arrive at ln with their own PID and path in the Origin.
	cmd := exec.Command("go", "test", "./...")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		log.Print(err)
	}
}

// Errors carry the library's text and compare with errors.Is.
func ExampleError() {
	r, err := redirector.New(redirector.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	err = r.SetConfig(redirector.Options{MaxFlows: 8})
	fmt.Println(errors.Is(err, redirector.ErrBadConfig))
	_, err = r.LookupAddrPort(redirector.TCP, netip.MustParseAddrPort("10.0.0.1:8080"),
		netip.MustParseAddrPort("198.18.0.10:443"))
	fmt.Println(errors.Is(err, redirector.ErrNotRunning))
	fmt.Println(err)
	// Output:
	// true
	// true
	// redirector: Lookup: redirector_lookup: the redirector is not running
}
