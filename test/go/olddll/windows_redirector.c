/* An older windows_redirector.dll, for the Go package's test of what New
 * says when the DLL lacks an export the package calls (go/load_windows_test.go):
 * the seed's six functions and redirector_version, nothing else. Built by the
 * go-pkg-windows suite (test/run.ts), never shipped. */
#include <stdint.h>

#define API __declspec(dllexport)

API void initialize_global_config(void) {}
API int32_t start_redirector(void) { return -2; }
API int32_t stop_redirector(void) { return -1; }
API int32_t set_redirector_config(const char *json) { return json ? 0 : -1; }
API int32_t get_redirector_status(void) { return 0; }
API void update_app_port(uint16_t port) { (void)port; }
API const char *redirector_version(void) { return "0.0.1"; }
