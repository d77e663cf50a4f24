// Package redirector sends the TCP and UDP traffic of chosen processes to a
// local port of your program, and tells your program, for each connection
// that arrives there, where it was really going.
//
// It wraps the windows-redirector C library: windows_redirector.dll with
// WinDivert on Windows, loaded at run time and called without cgo (a
// CGO_ENABLED=0 build works), and libwindows_redirector.so with NFQUEUE on
// Linux, through cgo. The API and the errors are the same on both. Starting
// needs Administrator rights on Windows (root or CAP_NET_ADMIN on Linux).
//
// # A transparent proxy
//
//	package main
//
//	import (
//		"context"
//		"io"
//		"log"
//		"net"
//		"os"
//		"os/signal"
//
//		redirector "windows-redirector/go/redirector"
//	)
//
//	func main() {
//		r, err := redirector.New(redirector.Options{
//			AppPort:   8080,
//			Intercept: []string{"curl", "!1234"}, // curl, but never PID 1234
//			Protocols: []redirector.Protocol{redirector.TCP},
//			Logger:    log.Default(),
//		})
//		if err != nil {
//			log.Fatal(err)
//		}
//		defer r.Close()
//
//		ln, err := r.Listen("tcp", ":8080")
//		if err != nil {
//			log.Fatal(err)
//		}
//		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
//		defer stop()
//		if err := r.Start(ctx); err != nil {
//			log.Fatal(err) // e.g. errors.Is(err, redirector.ErrInit): "WinDivert driver not found ..."
//		}
//		go func() { <-ctx.Done(); ln.Close() }()
//		for {
//			c, err := ln.AcceptRedirected() // only redirected connections (see below)
//			if err != nil {
//				return
//			}
//			go func(c *redirector.Conn) {
//				defer c.Close()
//				o := c.Origin()
//				log.Printf("PID %d (%s) -> %s", o.PID, o.Process, o.Destination)
//				up, err := net.Dial("tcp", o.Destination.String()) // the proxy itself is never intercepted
//				if err != nil {
//					return
//				}
//				defer up.Close()
//				go func() {
//					io.Copy(up, c)
//					up.(*net.TCPConn).CloseWrite() // pass the client's end of data on
//				}()
//				io.Copy(c, up)
//			}(c)
//		}
//	}
//
// For UDP, read datagrams on the app port and ask LookupUDP (or
// LookupAddrPort) with the socket's local address and the sender; reply to
// the sender from the same socket, and drop datagrams whose lookup fails
// (ErrNotFound: not redirected). cmd/redirect-proxy does both, with
// half-closes, byte counts and a summary.
//
// # A command and everything it starts
//
// A test agent often does not know which process will connect: `go test`
// runs a test binary, a script starts curl, a launcher starts the real
// program. Options.Trees (or a "tree:" entry in Intercept) intercepts a
// process and all its descendants, at any depth, also those started after
// their parent has exited; a PID reused later by an unrelated process is not
// taken for a member. Naming the agent's own PID intercepts every command it
// starts from their first connection (the agent itself, the proxy, is never
// intercepted):
//
//	r, err := redirector.New(redirector.Options{
//		AppPort: 8080,
//		Trees:   []int{os.Getpid()}, // every process this agent starts, and theirs
//	})
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer r.Close()
//	ln, _ := r.Listen("tcp", ":8080")
//	go serve(ln) // as above
//	if err := r.Start(ctx); err != nil {
//		log.Fatal(err)
//	}
//	cmd := exec.Command("go", "test", "./...")
//	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
//	err = cmd.Run() // the test binaries' connections arrive at the proxy with their own PID and path
//
// To intercept one command's tree only, start it and then name it:
// Options{Trees: []int{cmd.Process.Pid}} in SetConfig (a connection it opens
// before the call goes direct).
//
// # Only redirected connections are served
//
// A redirected connection reaches the proxy as inbound traffic addressed to
// the client's own address, so on Windows the proxy must listen on the
// wildcard address and Windows Defender Firewall must allow inbound
// connections to the app port: the port is then reachable from the network,
// and any local process can connect to it on either system. Such a direct
// connection has no origin and must not be served as if it had one.
// Listen's Accept and AcceptRedirected therefore return only connections the
// library redirected: the others are closed at once, counted
// (Listener.Refused) and the first ones logged (Options.Logger). Set
// Listener.AcceptDirect to get them too, with Conn.Redirected false.
//
// # One library per process
//
// The C library is global to the process: one configuration, one running
// redirector. A Redirector is an object over it, not package
// globals, but only one may be open at a time: New returns ErrInUse while
// another is open. Close is idempotent and makes room for the next one.
//
// # Errors
//
// Errors are *OpError values carrying the library's text and an Error code
// equal to the C REDIRECTOR_E* code, so errors.Is works:
//
//	if errors.Is(err, redirector.ErrInit) { ... }   // could not start
//	if errors.Is(err, redirector.ErrNotFound) { ... } // not a redirected connection
//
// The library keeps the last error per OS thread; the package reads it on
// the thread of the call that failed (in the same C call with cgo; with the
// goroutine locked to its thread on Windows), so each error carries its own
// call's code and text whichever thread the goroutine runs on. The seed
// functions' -1/-2/-3 are mapped through that code. The same failures give
// the same codes and texts on both systems; a Windows DLL that cannot be
// loaded is an ErrInit from New (see Building).
//
// # Zero values
//
// A field of Options left zero (0, nil, "") takes the library's default, in
// New and SetConfig alike; AppPort 0 keeps the port in force. Where "none"
// is not the default it has a name: NoHeldPackets, a non-nil empty Bypass.
//
// # Building
//
// The module needs Go 1.22 or newer; its one dependency is golang.org/x/sys.
// Use it from another module with a replace directive:
//
//	require windows-redirector/go/redirector v0.0.0
//	replace windows-redirector/go/redirector => /path/to/windows-redirector/go
//
// Windows: no cgo and no C compiler; build anywhere with
//
//	GOOS=windows GOARCH=amd64 CGO_ENABLED=0 go build
//
// and put windows_redirector.dll beside your program, with WinDivert.dll and
// WinDivert64.sys (or Options.WinDivertDir). The DLL is loaded on first use
// (New, Version), never at start-up: from the program's folder first, then
// from the file or folder SetLibraryPath names; nothing else is searched.
// When it cannot be loaded, New returns ErrInit saying why: not found (and
// where it looked), not a DLL for this program's architecture, or a DLL
// older than the package (which exports it lacks).
//
// Linux: cgo (CGO_ENABLED=1) links libwindows_redirector.so, found through
// pkg-config (`#cgo pkg-config: windows_redirector`). `cmake --install
// build/linux --prefix P` writes P/lib/pkgconfig/windows_redirector.pc,
// which pkg-config finds in its default path (P=/usr/local) or through
// PKG_CONFIG_PATH=P/lib/pkgconfig; it adds no rpath, so the dynamic loader
// must find the .so at run time (ldconfig, or LD_LIBRARY_PATH=P/lib). For a
// checkout's build tree,
// `npm run build` writes build/linux/windows_redirector-uninstalled.pc, with
// the header and an rpath to the library:
//
//	PKG_CONFIG_PATH=/path/to/windows-redirector/build/linux go build
//
// Without cgo on Linux, or on other systems, the build stops with a message
// saying so.
package redirector
