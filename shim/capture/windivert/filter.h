/* The NETWORK handle's filter, built from the capture scope (host.h,
 * wr_capture_scope): WinDivert filter text that diverts what the scope says
 * and nothing else it can leave out. A pure function of the scope, for the
 * backend and the tests (test_wd_backend.c: scope -> text;
 * test_wd_oracle.c: every text compiled by the real WinDivert.dll). */
#ifndef WR_WD_FILTER_H
#define WR_WD_FILTER_H

#include <stddef.h>

#include "host.h"

/* Room for the longest filter the builder writes, with its NUL. */
#define WR_WD_FILTER_CAP 16384
/* The most comparisons a built filter makes. WinDivert's compiler takes
 * 256 tests and its driver fewer than 256 (sys/windivert.c refuses a filter
 * object of 256 instructions); a comparison is one test at most. */
#define WR_WD_FILTER_TESTS_MAX 200
/* The most tokens (WinDivert's tokenizer stops at 5 * 256 - 2). */
#define WR_WD_FILTER_TOKENS_MAX 1200

typedef struct {
  int tests;    /* comparisons in the text */
  int tokens;   /* tokens in the text */
  int narrowed; /* 1: ports, networks or app ports narrow it (else it is the protocols' whole traffic, or false) */
  int too_long; /* 1: the scope's lists did not fit; the text leaves them out (diverts more) */
} wr_wd_filter_info;

/* Writes the NETWORK filter for scope s into out[0..cap) and returns its
 * length, or 0 when cap is below WR_WD_FILTER_CAP (out untouched then).
 * info may be NULL. The text is
 *   (ip or ipv6) and PROTOCOLS [and not loopback] [and (SIDES or APP PORTS)]
 * where a side is (remotePort or localPort in its ranges) and (remoteAddr
 * or localAddr in its networks): WinDivert's remote and local fields name a
 * packet's ends whichever way it goes, so one test holds for both
 * directions of a flow. NET_FILTER_ALSO (handles.h: the ICMP errors) is
 * OR-ed in beside that: (TRANSPORT) or ALSO, or ALSO alone when the scope
 * captures nothing (without it: "false"); ALSO is (ALSO and not loopback)
 * unless the scope takes loopback traffic. */
size_t wr_wd_net_filter(const wr_capture_scope *s, char *out, size_t cap, wr_wd_filter_info *info);

#endif
