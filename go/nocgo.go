//go:build linux && !cgo

package redirector

// On Linux the package calls the C library through cgo. Without cgo the
// build stops here, with this message, rather than at a confusing link or
// undefined-name error. (On Windows it needs no cgo.)
var _ int = "windows-redirector needs cgo on Linux (CGO_ENABLED=1)"
