/* bcryptprimitives.dll for the test suite's wine prefix only, never shipped.
 *
 * Go programs take their random numbers from ProcessPrng in
 * bcryptprimitives.dll (present on every Windows 10/11) and stop at start-up
 * without it. Debian 12's wine 8.0 has no such DLL, so the Go test programs
 * built for Windows could not run under it. This one answers ProcessPrng
 * from wine's own BCryptGenRandom (the system RNG); test/run.ts copies it
 * into the prefix it boots. */
#include <windows.h>
#include <bcrypt.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
  while (len > 0) {
    ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
    if (BCryptGenRandom(NULL, data, n, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0) return FALSE;
    data += n;
    len -= n;
  }
  return TRUE;
}
