// A user's Go program on the redirector package and an installed library:
// test/install.test.ts builds it against a `cmake --install` prefix and
// test/dist.test.ts against an unpacked release bundle (Linux: cgo and
// pkg-config; Windows: CGO_ENABLED=0, the DLL beside it). The test writes
// its go.mod, which points at the package's source.
//
//	consumer-go -version V [-start]
//
// One "ok   name" or "FAIL name: why" line per check, then
// "consumer-go: N checks, N failed"; exit 0 when none failed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	redirector "windows-redirector/go/redirector"
)

func main() {
	want := flag.String("version", "", "the version the library must report")
	start := flag.Bool("start", false, "also start and stop it (Windows: WinDivert.dll beside the program; Linux: root)")
	flag.Parse()
	checks, failed := 0, 0
	check := func(name string, ok bool, why ...any) {
		checks++
		if ok {
			fmt.Printf("ok   %s\n", name)
			return
		}
		failed++
		fmt.Printf("FAIL %s: %s\n", name, fmt.Sprint(why...))
	}

	v := redirector.Version()
	check("version", v == *want, "got ", v, ", want ", *want)
	r, err := redirector.New(redirector.Options{AppPort: 18233, Intercept: []string{"curl"}, Protocols: []redirector.Protocol{redirector.TCP}})
	check("New", err == nil, err)
	if r != nil {
		yes, err := r.WouldIntercept(4242, "/usr/bin/curl")
		check("curl is intercepted", yes && err == nil, yes, " ", err)
		yes, err = r.WouldIntercept(4243, "/usr/bin/wget")
		check("wget is not", !yes && err == nil, yes, " ", err)
		_, err = redirector.New(redirector.Options{})
		check("a second New is ErrInUse", errors.Is(err, redirector.ErrInUse), err)
		err = r.SetAppPort(0)
		check("SetAppPort(0) is ErrInvalid", errors.Is(err, redirector.ErrInvalid), err)
		if *start {
			err = r.Start(context.Background())
			check("Start", err == nil && r.Running(), err)
			check("Stop", r.Stop() == nil && !r.Running())
		}
		_, err = r.Stats()
		check("Stats", err == nil, err)
		check("Close", r.Close() == nil)
	}
	fmt.Printf("consumer-go: %d checks, %d failed\n", checks, failed)
	if failed > 0 {
		os.Exit(1)
	}
}
