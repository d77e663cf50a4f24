// Package redirector sends the TCP and UDP traffic of chosen processes to a
// local port of your program, and tells your program, for each connection
// that arrives there, where it was really going.
//
// It wraps the windows-redirector C library (windows_redirector.dll with
// WinDivert on Windows, libwindows_redirector.so with NFQUEUE on Linux)
// through cgo. It needs cgo (CGO_ENABLED=1) and Administrator rights on
// Windows (root or CAP_NET_ADMIN on Linux) to start.
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
//			c, err := ln.Accept()
//			if err != nil {
//				return
//			}
//			go func(c *redirector.Conn) {
//				defer c.Close()
//				o := c.Origin()
//				if !c.Redirected() {
//					return // someone connected to the app port directly
//				}
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
//			}(c.(*redirector.Conn))
//		}
//	}
//
// For UDP, read datagrams on the app port and ask LookupUDP (or
// LookupAddrPort) with the socket's local address and the sender; reply to
// the sender from the same socket. cmd/redirect-proxy does both, with
// half-closes, byte counts and a summary.
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
// The library keeps the last error per OS thread; the package reads it in
// the same C call as the call that failed, so each error carries its own
// call's code and text whichever thread the goroutine runs on. The seed
// functions' -1/-2/-3 are mapped through that code.
//
// # Building
//
// The #cgo lines point at the repository's build output (../build/linux with
// an rpath, ../build/windows): run `npm run build` first. Use the package
// from another module with a replace directive:
//
//	require windows-redirector/go/redirector v0.0.0
//	replace windows-redirector/go/redirector => /path/to/windows-redirector/go
//
// On Windows, windows_redirector.dll, WinDivert.dll and WinDivert64.sys go
// beside your program. Cross-compiling from Linux:
//
//	GOOS=windows CGO_ENABLED=1 CC=x86_64-w64-mingw32-gcc go build
package redirector
