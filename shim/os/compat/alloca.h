/* mingw-w64 has no <alloca.h>; the wasm2c output includes it. */
#ifndef WR_COMPAT_ALLOCA_H
#define WR_COMPAT_ALLOCA_H
#include <malloc.h>
#endif
