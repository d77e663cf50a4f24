/* Real process trees under wine, for the tests of process-tree targeting:
 * a test program starts itself as "tree_mid", which starts itself as
 * "tree_leaf" and prints the leaf's PID; each then waits for its named exit
 * event (WrTreeExit_<PID>) before it exits.
 *
 *   HANDLE mid = tree_start(&mid_pid, &leaf_pid);   the program's child, and its child
 *   tree_stop(mid, mid_pid);                        the mid exits (the leaf lives on)
 *   tree_stop_pid(leaf_pid);                        the leaf exits
 *
 * A test program's main dispatches: if (tree_child_main(argc, argv, &rc)) return rc; */
#ifndef WD_TREE_H
#define WD_TREE_H

#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline HANDLE tree_exit_event(DWORD pid) {
  char name[64];
  snprintf(name, sizeof name, "WrTreeExit_%lu", (unsigned long)pid);
  return CreateEventA(NULL, TRUE, FALSE, name);
}

/* Starts this program as `mode` with `out` as its standard output (NULL:
 * none). Returns its process handle and PID, or NULL. */
static inline HANDLE tree_spawn(const char *mode, HANDLE out, DWORD *pid) {
  char exe[MAX_PATH], cmd[MAX_PATH + 32];
  GetModuleFileNameA(NULL, exe, sizeof exe);
  snprintf(cmd, sizeof cmd, "\"%s\" %s", exe, mode);
  STARTUPINFOA si;
  memset(&si, 0, sizeof si);
  si.cb = sizeof si;
  si.dwFlags = STARTF_USESTDHANDLES;
  si.hStdOutput = out ? out : GetStdHandle(STD_OUTPUT_HANDLE);
  si.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
  si.hStdError = GetStdHandle(STD_ERROR_HANDLE);
  PROCESS_INFORMATION pi;
  if (!CreateProcessA(exe, cmd, NULL, NULL, TRUE, 0, NULL, NULL, &si, &pi)) return NULL;
  CloseHandle(pi.hThread);
  *pid = pi.dwProcessId;
  return pi.hProcess;
}

/* The child's side: waits to be told to exit. */
static inline int tree_wait(void) {
  HANDLE ev = tree_exit_event(GetCurrentProcessId());
  WaitForSingleObject(ev, 60000);
  CloseHandle(ev);
  return 0;
}

/* "tree_mid": starts the leaf, prints its PID, holds no handle of it. */
static inline int tree_mid(void) {
  DWORD leaf = 0;
  HANDLE h = tree_spawn("tree_leaf", GetStdHandle(STD_OUTPUT_HANDLE), &leaf);
  printf("%lu\n", h ? (unsigned long)leaf : 0ul);
  fflush(stdout);
  if (h) CloseHandle(h);
  return tree_wait();
}

static inline int tree_child_main(int argc, char **argv, int *rc) {
  if (argc > 1 && strcmp(argv[1], "tree_mid") == 0) {
    *rc = tree_mid();
    return 1;
  }
  if (argc > 1 && strcmp(argv[1], "tree_leaf") == 0) {
    *rc = tree_wait();
    return 1;
  }
  return 0;
}

/* Starts a mid and its leaf: the mid's handle (NULL on failure). */
static inline HANDLE tree_start(DWORD *mid_pid, DWORD *leaf_pid) {
  SECURITY_ATTRIBUTES sa = {sizeof sa, NULL, TRUE};
  HANDLE rd, wr;
  *mid_pid = *leaf_pid = 0;
  if (!CreatePipe(&rd, &wr, &sa, 0)) return NULL;
  SetHandleInformation(rd, HANDLE_FLAG_INHERIT, 0);
  HANDLE mid = tree_spawn("tree_mid", wr, mid_pid);
  CloseHandle(wr);
  char line[32] = "";
  DWORD got = 0, total = 0;
  while (mid && total < sizeof line - 1 && ReadFile(rd, line + total, 1, &got, NULL) && got == 1 &&
         line[total] != '\n') {
    total++;
  }
  line[total] = '\0';
  CloseHandle(rd);
  *leaf_pid = (DWORD)strtoul(line, NULL, 10);
  return mid;
}

/* Tells a process of the tree to exit and waits until it has (up to 10 s). */
static inline void tree_stop_pid(DWORD pid) {
  HANDLE ev = tree_exit_event(pid);
  HANDLE p = OpenProcess(SYNCHRONIZE, FALSE, pid);
  SetEvent(ev);
  if (p) {
    WaitForSingleObject(p, 10000);
    CloseHandle(p);
  }
  CloseHandle(ev);
}

static inline void tree_stop(HANDLE h, DWORD pid) {
  HANDLE ev = tree_exit_event(pid);
  SetEvent(ev);
  WaitForSingleObject(h, 10000);
  CloseHandle(h);
  CloseHandle(ev);
}

/* A process's creation time (FILETIME value), 0 when it cannot be opened. */
static inline unsigned long long tree_ctime(DWORD pid) {
  HANDLE p = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, pid);
  FILETIME c, e, k, u;
  unsigned long long v = 0;
  if (p && GetProcessTimes(p, &c, &e, &k, &u)) v = ((unsigned long long)c.dwHighDateTime << 32) | c.dwLowDateTime;
  if (p) CloseHandle(p);
  return v;
}

/* Waits (up to 10 s) until the process (pid, ctime) can no longer be
 * opened: an exited process stays open to OpenProcess while anything
 * holds it (wine's server, half a second after the exit). */
static inline int tree_gone(DWORD pid, unsigned long long ctime) {
  for (int i = 0; i < 200; i++) {
    if (tree_ctime(pid) != ctime) return 1;
    Sleep(50);
  }
  return 0;
}

#endif
