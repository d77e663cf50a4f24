/* Prints the layout of the header's structs as the C compiler sees it, one
 * "struct.field offset size" line per field and "struct size" per struct, so
 * the hand-written C# and Python bindings can be checked against it. */
#include <stddef.h>
#include <stdio.h>

#include "windows_redirector.h"

#define SIZE(s) printf(#s " %zu\n", sizeof(s))
#define FIELD(s, f) printf(#s "." #f " %zu %zu\n", offsetof(s, f), sizeof(((s *)0)->f))

int main(void) {
  SIZE(redirector_endpoint);
  FIELD(redirector_endpoint, family);
  FIELD(redirector_endpoint, port);
  FIELD(redirector_endpoint, addr);
  SIZE(redirector_origin);
  FIELD(redirector_origin, protocol);
  FIELD(redirector_origin, direction);
  FIELD(redirector_origin, pid);
  FIELD(redirector_origin, destination);
  FIELD(redirector_origin, client);
  FIELD(redirector_origin, peer);
  FIELD(redirector_origin, app_port);
  FIELD(redirector_origin, flow_id);
  FIELD(redirector_origin, bytes_up);
  FIELD(redirector_origin, bytes_down);
  FIELD(redirector_origin, process_path);
  SIZE(redirector_event);
  FIELD(redirector_event, type);
  FIELD(redirector_event, time_ms);
  FIELD(redirector_event, origin);
  SIZE(redirector_stats);
  FIELD(redirector_stats, running);
  FIELD(redirector_stats, packets);
  FIELD(redirector_stats, lookups);
  FIELD(redirector_stats, bytes_per_flow);
  FIELD(redirector_stats, redirected_syn_unanswered);
  FIELD(redirector_stats, redirected_syn_refused);
  return 0;
}
