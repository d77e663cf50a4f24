//go:build cgo && !linux && !windows

package redirector

// The library is built for Linux (NFQUEUE) and Windows (WinDivert) only.
var _ int = "windows-redirector supports only linux and windows"
