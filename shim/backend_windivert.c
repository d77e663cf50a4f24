/* Windows capture backend (WinDivert). WinDivert.dll is loaded at start,
 * never at library load, so the library loads and reports its absence as an
 * error instead of failing to load. */
#ifdef _WIN32
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "platform.h"

struct wr_backend {
  HMODULE dll;
};

/* UTF-8 -> UTF-16; the result must be freed. NULL on failure. */
static wchar_t *widen(const char *s) {
  int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
  if (n <= 0) return NULL;
  wchar_t *w = malloc((size_t)n * sizeof *w);
  if (!w) return NULL;
  MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, n);
  return w;
}

/* UTF-16 -> UTF-8 into out (cut to fit). */
static void narrow(const wchar_t *w, char *out, size_t outlen) {
  if (outlen == 0) return;
  int n = WideCharToMultiByte(CP_UTF8, 0, w, -1, out, (int)outlen, NULL, NULL);
  if (n <= 0) out[0] = '\0';
  out[outlen - 1] = '\0';
}

/* The directory of the running program, UTF-8, without a trailing '\'. */
static void app_dir(char *out, size_t outlen) {
  wchar_t path[MAX_PATH * 4];
  DWORD n = GetModuleFileNameW(NULL, path, (DWORD)(sizeof path / sizeof path[0]));
  if (n == 0 || n >= sizeof path / sizeof path[0]) {
    snprintf(out, outlen, "(unknown)");
    return;
  }
  wchar_t *slash = wcsrchr(path, L'\\');
  if (slash) *slash = L'\0';
  narrow(path, out, outlen);
}

static HMODULE load_windivert(const char *dir, char *err, size_t errlen) {
  HMODULE h;
  DWORD code;
  char where[1200];
  if (dir) {
    size_t n = strlen(dir);
    char *full = malloc(n + sizeof "\\WinDivert.dll");
    if (!full) {
      snprintf(err, errlen, "out of memory");
      return NULL;
    }
    memcpy(full, dir, n);
    strcpy(full + n, (n && (dir[n - 1] == '\\' || dir[n - 1] == '/')) ? "WinDivert.dll" : "\\WinDivert.dll");
    wchar_t *w = widen(full);
    free(full);
    if (!w) {
      snprintf(err, errlen, "the WinDivert directory is not valid UTF-8");
      return NULL;
    }
    /* Altered search path: WinDivert.dll's own dependencies and driver are
     * looked up beside it. */
    h = LoadLibraryExW(w, NULL, LOAD_WITH_ALTERED_SEARCH_PATH);
    code = GetLastError();
    free(w);
    snprintf(where, sizeof where, "%s (set with redirector_set_windivert_path)", dir);
  } else {
    h = LoadLibraryExW(L"WinDivert.dll", NULL, LOAD_LIBRARY_SEARCH_APPLICATION_DIR | LOAD_LIBRARY_SEARCH_SYSTEM32);
    code = GetLastError();
    char app[1024];
    app_dir(app, sizeof app);
    snprintf(where, sizeof where, "the application directory %s and System32", app);
  }
  if (!h) {
    snprintf(err, errlen,
             "WinDivert driver not found: WinDivert.dll could not be loaded from %s (Windows error %lu). Put "
             "WinDivert.dll and WinDivert64.sys beside your program, or call redirector_set_windivert_path with "
             "their folder",
             where, (unsigned long)code);
  }
  return h;
}

wr_backend *wr_backend_start(const wr_backend_options *opts, char *err, size_t errlen) {
  HMODULE dll = load_windivert(opts->windivert_dir, err, errlen);
  if (!dll) return NULL;
  FreeLibrary(dll);
  snprintf(err, errlen, "the WinDivert capture backend is not available in this build yet");
  return NULL;
}

int wr_backend_set_app_port(wr_backend *b, uint16_t port, char *err, size_t errlen) {
  (void)b;
  (void)port;
  (void)err;
  (void)errlen;
  return 0;
}

size_t wr_backend_diagnostics(wr_backend *b, char *buf, size_t len) {
  (void)b;
  if (len) buf[0] = '\0';
  return 0;
}

void wr_backend_stop(wr_backend *b) {
  if (!b) return;
  if (b->dll) FreeLibrary(b->dll);
  free(b);
}
#endif
