// Command redirect-proxy is a transparent proxy built on the redirector
// package: the TCP and UDP traffic of the processes you name goes to its
// port; it looks up where each connection was going, connects there itself,
// relays both ways and prints one line per connection. Ctrl-C prints a
// summary and stops; traffic then flows directly again.
//
//	redirect-proxy --port 8080 --process curl --pid 1234
//	redirect-proxy --port 8080 --tree 4321   # process 4321 and everything it starts
//
// On Windows run it as Administrator with windows_redirector.dll,
// WinDivert.dll and WinDivert64.sys beside it (or --windivert DIR); on Linux
// run it as root. It listens on the wildcard address, as redirected traffic
// needs (on Windows, allow inbound connections to the port in the firewall),
// and serves only what the library redirected: direct connections to the
// port are closed and stray datagrams dropped.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	redirector "windows-redirector/go/redirector"
)

type config struct {
	port      uint16
	pids      []int
	trees     []int
	processes []string
	protocols []redirector.Protocol
	windivert string
	udpIdle   time.Duration
	events    bool
	verbose   bool
}

// listFlag collects a flag given several times, or once with commas.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func parseArgs(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("redirect-proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	var pids, trees, procs listFlag
	port := fs.Uint("port", 8080, "the port to listen on (TCP and UDP); redirected traffic arrives there")
	fs.Var(&pids, "pid", "a process ID to intercept (repeat, or separate with commas)")
	fs.Var(&trees, "tree", "a process ID to intercept with all its descendants, also those started later (repeat, or commas)")
	fs.Var(&procs, "process", "a process name or pattern to intercept, e.g. curl or *\\chrome.exe; !name excludes (repeat, or commas)")
	protos := fs.String("protocols", "tcp,udp", "which protocols to redirect")
	fs.StringVar(&c.windivert, "windivert", "", "the folder of WinDivert.dll and WinDivert64.sys (Windows; default: beside the program, then System32)")
	fs.DurationVar(&c.udpIdle, "udp-idle", 60*time.Second, "forget a UDP flow after this long without datagrams")
	fs.BoolVar(&c.events, "events", false, "also print the library's connection events")
	fs.BoolVar(&c.verbose, "verbose", false, "print the library's start and stop")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: redirect-proxy --port PORT [--pid PID]... [--tree PID]... [--process NAME]...\n\n"+
			"Redirects the chosen processes' TCP and UDP traffic to PORT, relays it to where it was going,\n"+
			"and prints one line per connection. Ctrl-C stops and prints a summary.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *port == 0 || *port > 65535 {
		return c, fmt.Errorf("--port must be 1 to 65535, not %d", *port)
	}
	c.port = uint16(*port)
	var err error
	if c.pids, err = pidList("--pid", pids); err != nil {
		return c, err
	}
	if c.trees, err = pidList("--tree", trees); err != nil {
		return c, err
	}
	c.processes = procs
	if len(c.pids) == 0 && len(c.trees) == 0 && len(c.processes) == 0 {
		return c, errors.New("name what to intercept: --pid PID, --tree PID or --process NAME")
	}
	for _, s := range strings.Split(*protos, ",") {
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "tcp":
			c.protocols = append(c.protocols, redirector.TCP)
		case "udp":
			c.protocols = append(c.protocols, redirector.UDP)
		default:
			return c, fmt.Errorf("--protocols: %q is not tcp or udp", s)
		}
	}
	if c.udpIdle <= 0 {
		return c, errors.New("--udp-idle must be positive")
	}
	return c, nil
}

// pidList reads the process IDs given to a flag.
func pidList(flagName string, list []string) ([]int, error) {
	var pids []int
	for _, s := range list {
		pid, err := strconv.Atoi(s)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("%s %q is not a process ID", flagName, s)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	c, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "redirect-proxy: %v\n", err)
		return 2
	}
	opts := redirector.Options{
		AppPort:      c.port,
		PIDs:         c.pids,
		Trees:        c.trees,
		Intercept:    c.processes,
		Protocols:    c.protocols,
		WinDivertDir: c.windivert,
		Description:  "redirect-proxy",
	}
	if c.verbose {
		opts.Logger = log.New(stderr, "", log.LstdFlags)
	}
	r, err := redirector.New(opts)
	if err != nil {
		fmt.Fprintf(stderr, "redirect-proxy: %v\n", err)
		return 1
	}
	defer r.Close()

	p := newProxy(r, stdout, c.udpIdle)
	// Upstream connections through the redirector's Dialer: the capture never
	// needs to look at them.
	dialer := r.Dialer()
	dialer.Timeout = 10 * time.Second
	p.dialTCP = func(addr string) (net.Conn, error) { return dialer.Dial("tcp", addr) }
	// Both listen on the wildcard address, as redirected traffic needs (on
	// Windows with an inbound firewall rule for the port), so others can
	// reach the port too: the Listener closes TCP connections that were not
	// redirected, and serveUDP drops such datagrams.
	var tcp tcpListener
	var udp *net.UDPConn
	for _, proto := range c.protocols {
		var err error
		switch proto {
		case redirector.TCP:
			var ln *redirector.Listener
			if ln, err = r.Listen("tcp", fmt.Sprintf(":%d", c.port)); err == nil {
				tcp, p.refused = listener{ln}, ln.Refused
			}
		case redirector.UDP:
			udp, err = net.ListenUDP("udp", &net.UDPAddr{Port: int(c.port)})
		}
		if err != nil {
			fmt.Fprintf(stderr, "redirect-proxy: %v\n", err)
			return 1
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := r.Start(ctx); err != nil {
		fmt.Fprintf(stderr, "redirect-proxy: %v\n", err)
		if errors.Is(err, redirector.ErrInit) {
			fmt.Fprintln(stderr, "redirect-proxy: Windows: run as Administrator with WinDivert.dll and WinDivert64.sys "+
				"beside the program (or --windivert DIR). Linux: run as root.")
		}
		return 1
	}
	p.printf("redirect-proxy %s: port %d, intercepting %s (%s). Ctrl-C stops.\n",
		redirector.Version(), c.port, describeTargets(c.pids, c.trees, c.processes), protoNames(c.protocols))
	if c.events {
		go p.printEvents(r.Events(ctx))
	}
	done := make(chan struct{})
	go func() {
		<-ctx.Done()
		p.shutdown(tcp, udp)
		close(done)
	}()
	p.serve(tcp, udp)
	<-done
	p.wait()
	p.summary(r)
	return 0
}

func describeTargets(pids, trees []int, processes []string) string {
	var parts []string
	for _, pid := range pids {
		parts = append(parts, "PID "+strconv.Itoa(pid))
	}
	for _, pid := range trees {
		parts = append(parts, "PID "+strconv.Itoa(pid)+" and its descendants")
	}
	parts = append(parts, processes...)
	return strings.Join(parts, ", ")
}

func protoNames(ps []redirector.Protocol) string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = strings.ToUpper(p.String())
	}
	return strings.Join(names, "+")
}
