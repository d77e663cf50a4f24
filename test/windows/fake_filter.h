/* The stand-in WinDivert.dll's filters (fake_filter.c): a syntax check, so
 * it refuses what WinDivert's filter compiler refuses, and an evaluator, so
 * it diverts to a handle only what the handle's filter matches, as the
 * driver does. Both cover the language the library writes and the fields
 * the tests use; test_wd_oracle.c holds them to the real WinDivert.dll
 * (WinDivertHelperCompileFilter, WinDivertHelperEvalFilter). */
#ifndef WR_FAKE_FILTER_H
#define WR_FAKE_FILTER_H

#include <stdint.h>

/* 1 when WinDivert compiles the filter at this layer (0-4). */
int ff_compiles(const char *filter, int layer);

/* Does the filter match the event: its 80-byte WINDIVERT_ADDRESS (the
 * layer in it) and, at the NETWORK layers, its packet? 1 yes, 0 no, -1 the
 * filter does not compile or reads a field the stand-in does not know. */
int ff_matches(const char *filter, const uint8_t *addr, const uint8_t *packet, uint32_t len);

#endif
