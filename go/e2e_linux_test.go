//go:build cgo && linux && e2e

package redirector

// End-to-end tests: real client processes, redirected by the library to a Go
// proxy, in network namespaces of their own.
//
//	namespace wrgc<pid> ("client")                 namespace wrgs<pid> ("internet")
//	  this test binary as the proxy scenario         this test binary as the server:
//	  (Redirector, Listen, UDP relay), and the       198.18.0.10 and fd00:198:18::10 on lo,
//	  client processes it starts (curl, and this     TCP echo :7000, HTTP :7080, UDP :7001
//	  binary as a client)
//	  198.19.254.1/30, fd00:198:19::1/64 ====veth==== 198.19.254.2/30, fd00:198:19::2/64
//	  routes 198.18.0.0/24, fd00:198:18::/48 via the veth
//
// Every address is inside these namespaces; nothing leaves them. They are
// deleted when the test ends, failed or not (and stale ones of a killed run
// at the next start).
//
// The helper processes are this test binary again, told their role by
// WR_E2E_ROLE (see TestMain). The scenario prints one JSON line per check;
// the parent turns each into a subtest, so `go test -v` lists them.

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	e2eServer4  = "198.18.0.10"
	e2eServer6  = "fd00:198:18::10"
	e2eTCPPort  = 7000
	e2eHTTPPort = 7080
	e2eUDPPort  = 7001
	e2ePrefix   = "wrg" // namespace and link names: wrgc<pid>, wrgs<pid>
	e2eRoleEnv  = "WR_E2E_ROLE"
	// The "internet" namespace, for a scenario's direct connections from
	// another machine.
	e2eOtherNSEnv = "WR_E2E_OTHER_NS"
	e2eClient4    = "198.19.254.1" // the client namespace's addresses on the veth
	e2eClient6    = "fd00:198:19::1"
	e2eResultTag  = "E2E "
)

func TestMain(m *testing.M) {
	if role := os.Getenv(e2eRoleEnv); role != "" {
		os.Exit(runRole(role))
	}
	os.Exit(m.Run())
}

// netEnv is the two namespaces and the server running in one of them.
type netEnv struct {
	client, server string // namespace names
	exe            string // this test binary
}

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// removeStaleNamespaces deletes namespaces left by a run that was killed.
func removeStaleNamespaces() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	rx := regexp.MustCompile(`^` + e2ePrefix + `[cs](\d+)\b`)
	for _, line := range strings.Split(string(out), "\n") {
		m := rx.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid != os.Getpid() && syscall.Kill(pid, 0) == syscall.ESRCH {
			exec.Command("ip", "netns", "del", strings.Fields(line)[0]).Run()
		}
	}
}

func newNetEnv(t *testing.T) *netEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the end-to-end tests create network namespaces: run as root")
	}
	for _, tool := range []string{"ip", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the end-to-end tests need %s (build/setup.sh installs it): %v", tool, err)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	removeStaleNamespaces()
	id := strconv.Itoa(os.Getpid())
	e := &netEnv{client: e2ePrefix + "c" + id, server: e2ePrefix + "s" + id, exe: exe}
	// Registered first, so a failure half-way still cleans up.
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", e.client).Run()
		exec.Command("ip", "netns", "del", e.server).Run()
	})
	exec.Command("ip", "netns", "del", e.client).Run()
	exec.Command("ip", "netns", "del", e.server).Run()
	c, s := e.client, e.server
	for _, cmd := range [][]string{
		{"ip", "netns", "add", c},
		{"ip", "netns", "add", s},
		{"ip", "link", "add", c, "netns", c, "type", "veth", "peer", "name", s, "netns", s},
		{"ip", "-n", c, "link", "set", "lo", "up"},
		{"ip", "-n", s, "link", "set", "lo", "up"},
		{"ip", "-n", c, "addr", "add", "198.19.254.1/30", "dev", c},
		{"ip", "-n", s, "addr", "add", "198.19.254.2/30", "dev", s},
		{"ip", "-n", c, "-6", "addr", "add", "fd00:198:19::1/64", "dev", c, "nodad"},
		{"ip", "-n", s, "-6", "addr", "add", "fd00:198:19::2/64", "dev", s, "nodad"},
		{"ip", "-n", s, "addr", "add", e2eServer4 + "/32", "dev", "lo"},
		{"ip", "-n", s, "-6", "addr", "add", e2eServer6 + "/128", "dev", "lo"},
		{"ip", "-n", c, "link", "set", c, "up"},
		{"ip", "-n", s, "link", "set", s, "up"},
		{"ip", "-n", c, "route", "add", "198.18.0.0/24", "via", "198.19.254.2"},
		{"ip", "-n", c, "-6", "route", "add", "fd00:198:18::/48", "via", "fd00:198:19::2"},
	} {
		sh(t, cmd...)
	}
	e.startServer(t)
	return e
}

// inNS is a command running in a namespace with a role of this binary.
func (e *netEnv) inNS(ctx context.Context, ns, role string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, e.exe, "-test.run=^$"}, args...)...)
	cmd.Env = append(os.Environ(), e2eRoleEnv+"="+role, e2eOtherNSEnv+"="+e.server)
	cmd.Stderr = os.Stderr
	return cmd
}

func (e *netEnv) startServer(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := e.inNS(ctx, e.server, "server")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
	})
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line
		io.Copy(io.Discard, out)
	}()
	select {
	case line := <-ready:
		if strings.TrimSpace(line) != "ready" {
			t.Fatalf("the server did not start: %q", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not start in 10 s")
	}
}

// e2eResult is one check of a scenario.
type e2eResult struct {
	Check  string `json:"check"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// runScenario runs a role in the client namespace and makes a subtest of
// each check it reports.
func (e *netEnv) runScenario(t *testing.T, role string, wantChecks int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := e.inNS(ctx, e.client, role)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var results []e2eResult
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, e2eResultTag) {
			t.Log(line)
			continue
		}
		var r e2eResult
		if err := json.Unmarshal([]byte(strings.TrimPrefix(line, e2eResultTag)), &r); err != nil {
			t.Errorf("bad result line %q: %v", line, err)
			continue
		}
		results = append(results, r)
	}
	err = cmd.Wait()
	for _, r := range results {
		r := r
		t.Run(r.Check, func(t *testing.T) {
			if !r.OK {
				t.Error(r.Detail)
			} else if r.Detail != "" {
				t.Log(r.Detail)
			}
		})
	}
	if err != nil || len(results) != wantChecks {
		t.Fatalf("the %s scenario ended with %v after %d of %d checks", role, err, len(results), wantChecks)
	}
}

// TestEndToEndPackage: clients intercepted by PID and by name, over TCP and
// UDP, IPv4 and IPv6, reach a proxy made with this package, which gets the
// right Origin and relays the data; a client not intercepted goes direct; a
// direct connection to the proxy's port from another machine (namespace) is
// closed unserved.
func TestEndToEndPackage(t *testing.T) {
	e := newNetEnv(t)
	e.runScenario(t, "scenario-package", len(packageChecks))
}

// TestEndToEndExample: cmd/redirect-proxy, built and run in the client
// namespace, relays curl (by name) and a UDP client (by PID), closes a direct
// connection from another machine (namespace) unserved, and prints their
// lines and a summary on SIGINT.
func TestEndToEndExample(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("needs the go tool to build cmd/redirect-proxy: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "redirect-proxy")
	build := exec.Command(goTool, "build", "-o", bin, "./cmd/redirect-proxy")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/redirect-proxy: %v\n%s", err, out)
	}
	e := newNetEnv(t)
	os.Setenv("WR_E2E_PROXY_BIN", bin)
	defer os.Unsetenv("WR_E2E_PROXY_BIN")
	e.runScenario(t, "scenario-example", len(exampleChecks))
}
