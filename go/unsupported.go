//go:build !linux && !(windows && (amd64 || arm64))

package redirector

// The library is built for Linux (NFQUEUE) and 64-bit Windows (WinDivert)
// only.
var _ int = "windows-redirector supports only linux and 64-bit windows"
