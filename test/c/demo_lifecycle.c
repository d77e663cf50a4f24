/* The interim demo: load the library, configure, start, stop, and show the
 * status and last-error text at each step. */
#include <stdio.h>

#include "windows_redirector.h"

static void show(const char *what, int rc) {
  char err[512];
  redirector_last_error(err, sizeof err);
  printf("%-44s -> %3d   status=%d%s%s\n", what, rc, get_redirector_status(), rc ? "   error: " : "", rc ? err : "");
}

int main(void) {
  printf("windows-redirector %s\n\n", redirector_version());
  initialize_global_config();
  show("set_redirector_config({\"intercept_pids\":[1,)", set_redirector_config("{\"intercept_pids\":[1,"));
  show("set_redirector_config({\"intercept_pids\":[\"x\"]})", set_redirector_config("{\"intercept_pids\":[\"x\"]}"));
  show("set_redirector_config({\"intercept_pids\":[1234]})", set_redirector_config("{\"intercept_pids\":[1234]}"));
  show("start_redirector() before update_app_port", start_redirector());
  update_app_port(8080);
  show("start_redirector()", start_redirector());
  show("start_redirector() again", start_redirector());
  show("stop_redirector()", stop_redirector());
  show("stop_redirector() again", stop_redirector());
  return 0;
}
