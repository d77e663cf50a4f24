//go:build windows && (amd64 || arm64)

package redirector

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The go-pkg-windows suite runs this binary from a folder without
// windows_redirector.dll (WR_TEST_LIBRARY_PATH: where it is) with only this
// test: nothing is loaded before the first use, New says where it looked, and
// after SetLibraryPath the next New loads it from there.
func TestLoadFromTheCallersPath(t *testing.T) {
	where := os.Getenv("WR_TEST_LIBRARY_PATH")
	if where == "" {
		t.Skip("run by the go-pkg-windows suite from a folder without windows_redirector.dll")
	}
	if loaded.Load() != nil {
		t.Fatal("the library was loaded before its first use")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	beside := filepath.Join(filepath.Dir(exe), dllName)
	if v := Version(); v != "" {
		t.Fatalf("Version without the library: %q", v)
	}
	_, err = New(Options{})
	wantErr(t, err, ErrInit, "New: windows_redirector.dll not found: looked for "+beside+" (beside the program);",
		"SetLibraryPath")
	if err := SetLibraryPath(filepath.Join(where, "nonexistent")); err != nil {
		t.Fatal(err)
	}
	_, err = New(Options{})
	wantErr(t, err, ErrInit, beside+" (beside the program) and "+filepath.Join(where, "nonexistent")+" (SetLibraryPath)")
	if err := SetLibraryPath(where); err != nil { // a folder: the DLL in it
		t.Fatal(err)
	}
	r, err := New(Options{PIDs: []int{4201234}})
	if err != nil {
		t.Fatalf("New after SetLibraryPath: %v", err)
	}
	defer r.Close()
	if got, want := loaded.Load().path, filepath.Join(where, dllName); !strings.EqualFold(got, want) {
		t.Fatalf("loaded from %s, want %s", got, want)
	}
	if yes, err := r.WouldIntercept(4201234, ""); err != nil || !yes {
		t.Fatalf("the loaded library does not work: %v %v", yes, err)
	}
	if v := Version(); v == "" {
		t.Fatal("no version once loaded")
	}
	err = SetLibraryPath(beside)
	wantErr(t, err, ErrInvalid, "already loaded from", "before the first New")
	if err := SetLibraryPath(filepath.Join(where, dllName)); err != nil {
		t.Fatalf("naming the loaded file again: %v", err)
	}
	if err := SetLibraryPath(""); err != nil {
		t.Fatalf("forgetting the path: %v", err)
	}
}

// The library is looked for beside the program first, then where
// SetLibraryPath says, and only there.
func TestLibraryCandidates(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	libMu.Lock()
	saved := libPath
	libPath = `C:\Elsewhere\windows_redirector.dll`
	c := libraryCandidates()
	libPath = saved
	libMu.Unlock()
	want := []candidate{{filepath.Join(filepath.Dir(exe), dllName), "beside the program"},
		{`C:\Elsewhere\windows_redirector.dll`, "SetLibraryPath"}}
	if len(c) != 2 || c[0] != want[0] || c[1] != want[1] {
		t.Fatalf("candidates %+v, want %+v", c, want)
	}
}

// A file that is not a DLL for this program's architecture: the library
// patched to say it is for 32-bit x86.
func TestLoadReportsWrongArchitecture(t *testing.T) {
	open(t, Options{})
	b, err := os.ReadFile(lib().path)
	if err != nil {
		t.Fatal(err)
	}
	peAt := binary.LittleEndian.Uint32(b[0x3c:])
	if string(b[peAt:peAt+4]) != "PE\x00\x00" {
		t.Fatalf("%s: no PE header at %#x", lib().path, peAt)
	}
	binary.LittleEndian.PutUint16(b[peAt+4:], 0x14c) // IMAGE_FILE_MACHINE_I386
	path := filepath.Join(t.TempDir(), dllName)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = loadFirst([]candidate{{path, "test"}})
	want := path + " is not a DLL for this program (windows/" + runtime.GOARCH + "), it is for windows/386"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("loading a 32-bit DLL: %v", err)
	}
}

// An older windows_redirector.dll (test/go/olddll: the seed's functions and
// redirector_version only) is refused, naming its version and what it lacks.
func TestLoadReportsMissingExports(t *testing.T) {
	old := os.Getenv("WR_TEST_OLD_LIBRARY")
	if old == "" {
		t.Skip("run by the go-pkg-windows suite, which builds the older DLL (test/go/olddll)")
	}
	_, err := loadFirst([]candidate{{old, "test"}})
	if err == nil || !strings.Contains(err.Error(), old+" (version 0.0.1) lacks redirector_set_app_port, "+
		"redirector_set_windivert_path, redirector_would_intercept, redirector_lookup,") ||
		!strings.Contains(err.Error(), "older than the package") || strings.Contains(err.Error(), "start_redirector") {
		t.Fatalf("loading an older DLL: %v", err)
	}
	_, err = loadFirst([]candidate{{filepath.Join(os.Getenv("SystemRoot"), "System32", "kernel32.dll"), "test"}})
	if err == nil || !strings.Contains(err.Error(), "of an unknown version) lacks start_redirector, stop_redirector") {
		t.Fatalf("loading a DLL that is not the library: %v", err)
	}
}
