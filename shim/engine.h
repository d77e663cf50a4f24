/* The engine host: one wasm2c instance of the AssemblyScript engine, entered
 * only through these functions. Each holds the process-wide engine lock (the
 * wasm2c runtime keeps its trap jump buffer and stack-depth counter in
 * globals, so only one call may run at a time) and runs the call inside a
 * trap guard. A trap never escapes: the call reports WR_ENGINE_TRAPPED, the
 * reason goes to the error text, and the instance is rebuilt with the last
 * accepted configuration and app port before the next call. */
#ifndef WR_ENGINE_H
#define WR_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#define WR_ENGINE_TRAPPED (-1000)

typedef struct wr_engine wr_engine;

/* Builds an instance. Returns NULL on failure with the reason in err. */
wr_engine *wr_engine_new(uint32_t self_pid, char *err, size_t errlen);
void wr_engine_free(wr_engine *e);

/* Applies configuration text. 0, -2, -3 (engine codes, reason in err), or
 * WR_ENGINE_TRAPPED. On success the text is kept for rebuilds. */
int wr_engine_config(wr_engine *e, const char *json, size_t len, char *err, size_t errlen);

void wr_engine_set_app_port(wr_engine *e, uint16_t port);

/* Arms a deliberate trap in the engine (eng_arm_fault bits). */
void wr_engine_arm_fault(wr_engine *e, uint32_t bits);

/* 1 if a process would be intercepted under the configuration in force, 0 if
 * not, -1 if the path is too long, or WR_ENGINE_TRAPPED. */
int wr_engine_would_intercept(wr_engine *e, uint32_t pid, const char *path, size_t len);

/* How many times this engine trapped and was rebuilt. */
uint32_t wr_engine_trap_count(wr_engine *e);

#endif
