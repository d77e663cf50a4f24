//go:build !cgo

package redirector

// The package calls the C library through cgo. Without cgo the build stops
// here, with this message, rather than at a confusing link or undefined-name
// error.
var _ int = "windows-redirector needs cgo (CGO_ENABLED=1)"
