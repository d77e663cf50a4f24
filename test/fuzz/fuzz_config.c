/* libFuzzer target: the configuration parser through the public ABI.
 * Only the documented return codes may come back, nothing may trap or
 * crash, and a rejected configuration must leave the one in force alone. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "windows_redirector.h"

/* PIDs above 4194304 cannot be this process's own (never intercepted). */
static const char *BASE = "{\"intercept_pids\":[4204242],\"intercept\":\"probe-*\"}";

static int probe(void) {
  return redirector_would_intercept(4204242, NULL) * 2 + redirector_would_intercept(4200077, "/opt/probe-x");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *json = malloc(size + 1);
  memcpy(json, data, size);
  json[size] = '\0';
  if (set_redirector_config(BASE) != 0) abort();
  int before = probe();
  int32_t rc = set_redirector_config(json);
  if (rc != 0 && rc != -2 && rc != -3) abort();
  if (rc != 0) {
    int32_t code = redirector_last_error_code();
    if (code != REDIRECTOR_ECONFIG && code != REDIRECTOR_EUTF8) abort();
    if (probe() != before) abort(); /* a rejected config changed the policy */
    char err[64];
    if (redirector_last_error(err, sizeof err) <= 0) abort(); /* every failure says why */
  }
  free(json);
  return 0;
}
