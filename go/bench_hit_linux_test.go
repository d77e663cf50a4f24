//go:build cgo && linux

package redirector

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Lookups that find a real redirected connection, while other redirected
// traffic flows. npm run bench runs this inside its network namespace with
// WR_BENCH_CLIENT (test/c/wr_testclient) and WR_BENCH_SERVER (an echo
// server, "198.19.0.10 80"); without them it is skipped.
func hitSetup(b *testing.B, traffic bool) (*Redirector, *Conn, func()) {
	client := os.Getenv("WR_BENCH_CLIENT")
	addr, port := os.Getenv("WR_BENCH_SERVER_ADDR"), os.Getenv("WR_BENCH_SERVER_PORT")
	if client == "" || addr == "" || port == "" {
		b.Skip("run by npm run bench, in its network namespace")
	}
	const app = 18091
	r := open(b, Options{AppPort: app, Intercept: []string{"wr_testclient"}})
	ln, err := r.Listen("tcp4", ":18091")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := r.Start(ctx); err != nil {
		b.Fatal(err)
	}
	conns := make(chan *Conn, 16)
	var wg sync.WaitGroup
	go func() {
		for {
			conn, err := ln.AcceptRedirected()
			if err != nil {
				return
			}
			select {
			case conns <- conn:
			default:
			}
			wg.Add(1)
			go func() { defer wg.Done(); relay(conn) }()
		}
	}()
	// One connection held open (the client pauses half way) to look up...
	held := exec.Command(client, "--pause", "600000", "tcp", addr, port, "2000")
	if err := held.Start(); err != nil {
		b.Fatal(err)
	}
	var target *Conn
	select {
	case target = <-conns:
	case <-time.After(10 * time.Second):
		b.Fatal("the held connection was not redirected")
	}
	// ...while bulk transfers keep flowing through the redirect.
	var stop atomic.Bool
	var flowing sync.WaitGroup
	flowing.Add(1)
	go func() {
		defer flowing.Done()
		for traffic && !stop.Load() {
			_ = exec.Command(client, "tcp", addr, port, "20000000").Run()
		}
	}()
	return r, target, func() {
		stop.Store(true)
		flowing.Wait()
		_ = held.Process.Kill()
		_ = held.Wait()
		cancel()
		ln.Close()
		r.Close()
	}
}

func relay(c *Conn) {
	o, err := c.Origin(), c.OriginErr()
	if err != nil {
		c.Close()
		return
	}
	up, err := net.Dial("tcp", o.Destination.String())
	if err != nil {
		c.Close()
		return
	}
	go func() { _, _ = io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
	_, _ = io.Copy(c, up)
	c.Close()
	up.Close()
}

func lookupLoop(b *testing.B, traffic bool) {
	r, c, done := hitSetup(b, traffic)
	defer done()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := r.Lookup(c); err != nil {
			b.Fatal(err)
		}
	}
}

// One goroutine, nothing else going on: the cost of a lookup itself.
func BenchmarkLookupHit(b *testing.B) { lookupLoop(b, false) }

// One goroutine while bulk transfers flow through the redirect (they share
// the engine's lock and the CPUs).
func BenchmarkLookupHitBusy(b *testing.B) { lookupLoop(b, true) }

// Four goroutines at once (GOMAXPROCS x parallelism = 4) while traffic flows.
func BenchmarkLookupHit4(b *testing.B) {
	r, c, done := hitSetup(b, true)
	defer done()
	p := 4 / runtime.GOMAXPROCS(0)
	if p < 1 {
		p = 1
	}
	b.SetParallelism(p)
	b.ReportAllocs()
	start := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.Lookup(c); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "lookups/s")
}
