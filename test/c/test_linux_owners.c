/* The Linux socket-owner module (shim/capture/nfqueue/owners.c) against real processes,
 * in a PID and network namespace of its own (root), where the next PID can be
 * chosen (ns_last_pid) to reuse a PID on purpose. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "capture/nfqueue/owners.h"

#define REUSED_PID 100

static char self_exe[4096];
static const char *intercepted = self_exe;

/* With tree_in set, the policy is a process tree: "tree:<tree_in>,!tree:<tree_out>"
 * (tree_out when set), decided from the oldest of the ancestry. */
static const char *tree_in, *tree_out;

static int path_is(const wr_ancestor *a, const char *path) {
  return path && a->path_len == strlen(path) && memcmp(a->path, path, a->path_len) == 0;
}

/* The policy of these tests: the program at `intercepted` (this one), or the tree. */
static int is_candidate(void *ctx, const wr_ancestor *chain, size_t n) {
  (void)ctx;
  if (!tree_in) return path_is(&chain[0], intercepted);
  int in = 0;
  for (size_t i = n; i-- > 0;) {
    if (path_is(&chain[i], tree_in)) in = 1;
    if (path_is(&chain[i], tree_out)) in = 0;
  }
  return in;
}

/* The next process forked gets this PID. */
static void next_pid(pid_t pid) {
  FILE *f = fopen("/proc/sys/kernel/ns_last_pid", "w");
  if (!f || fprintf(f, "%d", (int)pid - 1) < 0 || fclose(f) != 0) {
    perror("ns_last_pid");
    exit(2);
  }
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Waits until the process runs `exe` (its exec() is done). */
static int wait_exe(pid_t pid, const char *exe) {
  char name[64], buf[4096];
  snprintf(name, sizeof name, "/proc/%d/exe", (int)pid);
  for (int i = 0; i < 500; i++) {
    ssize_t n = readlink(name, buf, sizeof buf - 1);
    if (n > 0) {
      buf[n] = '\0';
      if (strstr(buf, exe)) return 1;
    }
    sleep_ms(10);
  }
  return 0;
}

/* A bound UDP socket on loopback; its port through *port. */
static int udp_socket(uint16_t *port) {
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(s, (struct sockaddr *)&a, &al) != 0) return -1;
  *port = ntohs(a.sin_port);
  return s;
}

/* A child of this program holding UDP sockets, told what to do through a
 * pipe: 'n' closes its newest socket and opens another (the same descriptor
 * number), 'a' adds one (a new number). After starting and after each
 * command it reports the newest socket's port. */
typedef struct {
  pid_t pid;
  int cmd, report;
} holder;

static void holder_main(int cmd, int report) {
  int newest = -1;
  char c = 'a';
  do {
    uint16_t port = 0;
    if (c == 'n' && newest >= 0) close(newest);
    newest = udp_socket(&port);
    if (newest < 0 || write(report, &port, sizeof port) != sizeof port) _exit(3);
  } while (read(cmd, &c, 1) == 1);
  _exit(0);
}

static uint16_t holder_port(const holder *h) {
  uint16_t port = 0;
  if (read(h->report, &port, sizeof port) != sizeof port) {
    fprintf(stderr, "child %d did not report its socket\n", (int)h->pid);
    exit(2);
  }
  return port;
}

static uint16_t holder_do(const holder *h, char c) {
  if (write(h->cmd, &c, 1) != 1) exit(2);
  return holder_port(h);
}

/* A holder at `pid` (0: any), this program or (exe not NULL) a copy of it
 * run from there, and the port of its first socket. */
static holder spawn_holder_exe(pid_t pid, const char *exe, uint16_t *port) {
  int cmd[2], report[2];
  if (pipe(cmd) != 0 || pipe(report) != 0) exit(2);
  if (pid) next_pid(pid);
  holder h = {fork(), cmd[1], report[0]};
  if (h.pid < 0) exit(2);
  if (h.pid == 0) {
    close(cmd[1]);
    close(report[0]);
    if (exe) {
      /* main() sees --hold and runs holder_main on stdin and stdout. */
      if (dup2(cmd[0], 0) < 0 || dup2(report[1], 1) < 0) _exit(3);
      char *const argv[] = {(char *)exe, "--hold", NULL};
      execv(exe, argv);
      _exit(127);
    }
    holder_main(cmd[0], report[1]);
  }
  close(cmd[0]);
  close(report[1]);
  *port = holder_port(&h);
  return h;
}

static holder spawn_holder(pid_t pid, uint16_t *port) { return spawn_holder_exe(pid, NULL, port); }

/* A child of this program that exec()s argv (with the holder's pipes on
 * its stdin and stdout) once o's listing has read it as a fork of this
 * program (wr_owners_watch, as the watch thread does). h->pid is the child;
 * returns the port of the holder's first socket. */
static uint16_t exec_after_listing(wr_owners *o, char *const argv[], holder *h) {
  int cmd[2], report[2], go[2];
  if (pipe(cmd) != 0 || pipe(report) != 0 || pipe(go) != 0) exit(2);
  pid_t c = fork();
  if (c < 0) exit(2);
  if (c == 0) {
    char b;
    close(cmd[1]);
    close(report[0]);
    close(go[1]);
    if (read(go[0], &b, 1) != 1 || dup2(cmd[0], 0) < 0 || dup2(report[1], 1) < 0) _exit(3);
    execv(argv[0], argv);
    _exit(127);
  }
  close(cmd[0]);
  close(report[1]);
  close(go[0]);
  *h = (holder){c, cmd[1], report[0]};
  wr_owners_watch(o);
  char b = 'x';
  if (write(go[1], &b, 1) != 1) exit(2);
  close(go[1]);
  return holder_port(h);
}

/* A child at `pid` running argv. */
static pid_t spawn_exec(pid_t pid, char *const argv[]) {
  next_pid(pid);
  pid_t c = fork();
  if (c < 0) exit(2);
  if (c == 0) {
    execv(argv[0], argv);
    _exit(127);
  }
  return c;
}

static void end(pid_t pid) {
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
}

static int find_udp(wr_owners *o, uint16_t port, uint32_t *pid, char *path, size_t cap) {
  uint8_t lo[16] = {127, 0, 0, 1};
  return wr_owners_find(o, IPPROTO_UDP, 4, 1, lo, port, lo, 9, pid, path, cap, NULL, NULL);
}

/* A PID first seen running a program that is not intercepted, reused at once
 * by one that is: the new process is recognised, not the cached decision. */
TEST_CASE(reused_pid) {
  char *const sleeper[] = {"/bin/sleep", "60", NULL};
  pid_t a = spawn_exec(REUSED_PID, sleeper);
  CHECK(a == REUSED_PID, "first child got PID %d, wanted %d", (int)a, REUSED_PID);
  CHECK(wait_exe(a, "sleep"), "the first child runs sleep");

  wr_owners *o = wr_owners_new(is_candidate, NULL);
  CHECK(o != NULL, "wr_owners_new");
  if (!o) return;
  end(a);

  uint16_t port = 0;
  pid_t b = spawn_holder(REUSED_PID, &port).pid;
  CHECK(b == REUSED_PID, "second child got PID %d, wanted %d", (int)b, REUSED_PID);
  uint32_t pid = 0;
  char path[4096] = "";
  CHECK(find_udp(o, port, &pid, path, sizeof path) == 1, "the socket of the intercepted process at the reused PID is found");
  CHECK(pid == (uint32_t)REUSED_PID, "owner PID %u", pid);
  CHECK(strcmp(path, self_exe) == 0, "owner path '%s', wanted '%s'", path, self_exe);
  end(b);

  /* The policy changes to leave this program alone: its sockets have no
   * owner any more. */
  pid_t c = spawn_holder(REUSED_PID + 50, &port).pid;
  CHECK(find_udp(o, port, &pid, path, sizeof path) == 1 && pid == (uint32_t)c, "found before the policy changed");
  intercepted = "/nonexistent/another-program";
  wr_owners_policy_changed(o);
  pid = 0;
  CHECK(find_udp(o, port, &pid, path, sizeof path) == 0, "a socket of a process the policy leaves alone has no owner (got PID %u)", pid);
  end(c);
  wr_owners_free(o);
}

/* Ends this process without the exit handlers (see main). */
static void quit(int code) {
  fflush(NULL);
  syscall(SYS_exit_group, code);
}

/* The exit code of a child, 3 if it did not exit. */
static int status_of(pid_t pid) {
  int st = 0;
  if (pid < 0 || waitpid(pid, &st, 0) != pid) return 3;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 3;
}

/* A process opening socket after socket: each is found, whether at the
 * descriptor number of the one before (closed) or at a new one. */
TEST_CASE(socket_after_socket) {
  wr_owners *o = wr_owners_new(is_candidate, NULL);
  CHECK(o != NULL, "wr_owners_new");
  if (!o) return;
  uint16_t port = 0;
  holder h = spawn_holder(0, &port);
  uint32_t pid = 0;
  char path[4096] = "";
  int same_fd = 0;
  for (int i = 0; i < 20; i++) {
    char c = i == 0 ? 0 : (i % 5 == 0 ? 'a' : 'n');
    if (c) port = holder_do(&h, c);
    same_fd += c == 'n';
    pid = 0;
    int found = find_udp(o, port, &pid, path, sizeof path);
    CHECK(found == 1 && pid == (uint32_t)h.pid, "step %d ('%c'): the socket on port %u is found (PID %u, want %d)", i,
          c ? c : '-', port, pid, (int)h.pid);
  }
  /* Each socket opened where the one before was closed was found by one
   * look at that descriptor; the others by a scan. */
  CHECK(wr_owners_probe_hits(o) == (uint64_t)same_fd, "the descriptor probe answered %llu finds, want %d",
        (unsigned long long)wr_owners_probe_hits(o), same_fd);
  end(h.pid);
  wr_owners_free(o);
}

/* A copy of this program at dir/name, in a new temporary dir (both
 * removed by drop_copy). 0 on success. */
static int copy_self(char *dir, char *exe, size_t cap, const char *name) {
  if (!mkdtemp(dir)) return -1;
  snprintf(exe, cap, "%s/%s", dir, name);
  char cmd[8400];
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", self_exe, exe);
  return system(cmd) == 0 ? 0 : -1;
}

static void drop_copy(const char *dir, const char *exe) {
  unlink(exe);
  rmdir(dir);
}

/* A copy of this program named not-intercepted (in dir, removed by
 * drop_copy), and an owners module; NULL (failures reported) if either fails. */
static wr_owners *owners_and_other(char *dir, char *other, size_t cap) {
  CHECK(copy_self(dir, other, cap, "not-intercepted") == 0, "copy the test program");
  wr_owners *o = wr_owners_new(is_candidate, NULL);
  CHECK(o != NULL, "wr_owners_new");
  return o;
}

/* An intercepted process found, then gone, and its PID reused at once by a
 * process that is not intercepted (another program): the newcomer's socket
 * has no owner, though the PID is still on the list of candidates. */
TEST_CASE(reused_candidate_pid) {
  char dir[] = "/tmp/wr-owners-XXXXXX", other[128];
  wr_owners *o = owners_and_other(dir, other, sizeof other);
  if (!o) return;
  uint16_t port = 0;
  uint32_t pid = 0;
  char path[4096] = "";
  holder a = spawn_holder(REUSED_PID, &port);
  CHECK(find_udp(o, port, &pid, path, sizeof path) == 1 && pid == (uint32_t)a.pid, "the intercepted one is found");
  end(a.pid);
  holder b = spawn_holder_exe(REUSED_PID, other, &port);
  CHECK(b.pid == REUSED_PID, "the other program got PID %d, wanted %d", (int)b.pid, REUSED_PID);
  pid = 0;
  int found = find_udp(o, port, &pid, path, sizeof path);
  CHECK(found == 0, "the newcomer is not taken for the intercepted one (PID %u, %s)", pid, path);
  end(b.pid);
  wr_owners_free(o);
  drop_copy(dir, other);
}

/* Field 22 (start time) of a process's stat, 0 if it is gone. */
static uint64_t start_of(pid_t pid) {
  char name[64], buf[1024];
  snprintf(name, sizeof name, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(name, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  for (int field = 2; p && *p && field < 22; p++) field += *p == ' ';
  return p ? strtoull(p, NULL, 10) : 0;
}

/* This process -> a middle process (at `pid`, 0: any; named `name` when
 * not NULL, a name its child inherits) -> a holder, whose pipes stay here.
 * The middle exits once a byte comes on *go; the holder lives on. */
static pid_t spawn_middle(pid_t pid, const char *name, holder *h, int *go_fd) {
  int cmd[2], report[2], told[2], go[2];
  if (pipe(cmd) != 0 || pipe(report) != 0 || pipe(told) != 0 || pipe(go) != 0) exit(2);
  if (pid) next_pid(pid);
  pid_t middle = fork();
  if (middle < 0) exit(2);
  if (middle == 0) {
    if (name && prctl(PR_SET_NAME, name, 0, 0, 0) != 0) _exit(3);
    pid_t c = fork();
    if (c == 0) holder_main(cmd[0], report[1]);
    char b;
    if (write(told[1], &c, sizeof c) != sizeof c || read(go[0], &b, 1) != 1) _exit(3);
    _exit(0); /* the holder lives on, re-parented */
  }
  *h = (holder){0, cmd[1], report[0]};
  if (read(told[0], &h->pid, sizeof h->pid) != sizeof h->pid) exit(2);
  *go_fd = go[1];
  return middle;
}

/* The ancestry of the owner of the holder's UDP socket on `port` (checked
 * to be the holder); its length. */
static size_t holder_chain(wr_owners *o, uint16_t port, const holder *h, wr_ancestor *chain) {
  uint8_t lo[16] = {127, 0, 0, 1};
  uint32_t pid = 0;
  char path[4096] = "";
  size_t n = 0;
  CHECK(wr_owners_find(o, IPPROTO_UDP, 4, 1, lo, port, lo, 9, &pid, path, sizeof path, chain, &n) == 1 &&
            pid == (uint32_t)h->pid, "the holder is found (PID %u)", pid);
  return n;
}

/* An owner's ancestry: the process, then the parent it had when first read,
 * kept after that parent exits; a parent's PID taken by a younger process
 * is not given as its parent. */
TEST_CASE(ancestry) {
  char dir[] = "/tmp/wr-owners-XXXXXX", other[128];
  wr_owners *o = owners_and_other(dir, other, sizeof other);
  if (!o) return;
  const pid_t MIDDLE = REUSED_PID + 100;
  holder h;
  int go = -1;
  pid_t middle = spawn_middle(MIDDLE, NULL, &h, &go);
  CHECK(middle == MIDDLE, "middle got PID %d, wanted %d", (int)middle, (int)MIDDLE);
  uint16_t port = holder_port(&h);
  uint64_t middle_start = start_of(middle);
  uint8_t lo[16] = {127, 0, 0, 1};
  uint32_t pid = 0;
  char path[4096] = "";
  wr_ancestor chain[WR_ANCESTRY_CAP];
  size_t n = holder_chain(o, port, &h, chain);
  CHECK(n >= 3 && chain[0].pid == (uint32_t)h.pid && chain[1].pid == (uint32_t)middle &&
            chain[1].ctime == middle_start && chain[2].pid == (uint32_t)getpid(),
        "ancestry: holder, middle, this process (%zu entries; %u %u %u)", n, n > 0 ? chain[0].pid : 0,
        n > 1 ? chain[1].pid : 0, n > 2 ? chain[2].pid : 0);
  CHECK(n >= 2 && chain[1].path_len == strlen(self_exe) && memcmp(chain[1].path, self_exe, chain[1].path_len) == 0,
        "the middle's path");
  CHECK(n >= 1 && chain[0].age_ms < 60000 && chain[0].ctime == start_of(h.pid), "the holder's age and start time");

  /* The middle exits: the holder, re-parented, still names it. */
  char c = 'x';
  if (write(go, &c, 1) != 1) exit(2);
  status_of(middle);
  port = holder_do(&h, 'a');
  n = 0;
  CHECK(wr_owners_find(o, IPPROTO_UDP, 4, 1, lo, port, lo, 9, &pid, path, sizeof path, chain, &n) == 1, "found again");
  CHECK(n >= 2 && chain[1].pid == (uint32_t)middle && chain[1].ctime == middle_start,
        "after its parent exited: the parent it was created by (%zu entries; parent %u)", n, n > 1 ? chain[1].pid : 0);

  /* The middle's PID taken by a younger process, and /proc listed again
   * (another program's socket is looked for): not the holder's parent. */
  char *const sleeper[] = {"/bin/sleep", "60", NULL};
  /* (Start times count clock ticks: processes started in the same tick
   * cannot be told apart by them.) */
  sleep_ms(30);
  pid_t reuse = spawn_exec(MIDDLE, sleeper);
  CHECK(reuse == MIDDLE, "the PID was reused (%d)", (int)reuse);
  CHECK(start_of(reuse) != middle_start, "the newcomer started in a later clock tick");
  CHECK(wait_exe(reuse, "sleep"), "the newcomer runs sleep");
  uint16_t other_port = 0;
  holder b = spawn_holder_exe(0, other, &other_port);
  CHECK(find_udp(o, other_port, &pid, path, sizeof path) == 0, "the other program is not a candidate");
  port = holder_do(&h, 'a');
  n = 0;
  CHECK(wr_owners_find(o, IPPROTO_UDP, 4, 1, lo, port, lo, 9, &pid, path, sizeof path, chain, &n) == 1, "found again");
  uint64_t reuse_start = start_of(reuse);
  for (size_t i = 0; i < n; i++) {
    CHECK(!(chain[i].pid == (uint32_t)reuse && chain[i].ctime == reuse_start),
          "the newcomer at the reused PID is not in the ancestry (entry %zu)", i);
  }
  CHECK(n >= 2 && chain[0].pid == (uint32_t)h.pid && chain[1].pid == (uint32_t)middle && chain[1].ctime == middle_start &&
            chain[1].path_len == 0,
        "the holder, then its parent by identity only (%zu entries)", n);
  end(b.pid);
  end(reuse);
  end(h.pid);
  wr_owners_free(o);
  drop_copy(dir, other);
}

/* A command name with ") " in it, such as prctl(PR_SET_NAME) may set:
 * /proc/<pid>/stat reads "pid (x) S 1 2 3 4) S ppid ...", and its fields
 * are counted from the last ')' (counted from the first, the parent would
 * be PID 1 and the start time another field). Both the holder and its
 * parent (the name is inherited) carry it. */
TEST_CASE(paren_name) {
  wr_owners *o = wr_owners_new(is_candidate, NULL);
  CHECK(o != NULL, "wr_owners_new");
  if (!o) return;
  static const char NAME[] = "x) S 1 2 3 4"; /* at most 15 bytes */
  holder h;
  int go = -1;
  pid_t middle = spawn_middle(0, NAME, &h, &go);
  uint16_t port = holder_port(&h);
  char comm[64] = "", want[64];
  snprintf(want, sizeof want, "%s\n", NAME);
  for (pid_t p = middle; p; p = p == middle ? h.pid : 0) {
    snprintf(comm, sizeof comm, "/proc/%d/comm", (int)p);
    FILE *f = fopen(comm, "r");
    size_t n = f ? fread(comm, 1, sizeof comm - 1, f) : 0;
    if (f) fclose(f);
    comm[n] = '\0';
    CHECK(strcmp(comm, want) == 0, "process %d is named \"%s\" (reads \"%s\")", (int)p, NAME, comm);
  }
  wr_ancestor chain[WR_ANCESTRY_CAP];
  size_t n = holder_chain(o, port, &h, chain);
  CHECK(n >= 3 && chain[0].pid == (uint32_t)h.pid && chain[1].pid == (uint32_t)middle &&
            chain[2].pid == (uint32_t)getpid(),
        "ancestry: holder %d, its parent %d, this process %d (%zu entries; %u %u %u)", (int)h.pid, (int)middle,
        (int)getpid(), n, n > 0 ? chain[0].pid : 0, n > 1 ? chain[1].pid : 0, n > 2 ? chain[2].pid : 0);
  uint64_t hs = start_of(h.pid), ms = start_of(middle);
  CHECK(hs != 0 && n >= 2 && chain[0].ctime == hs && chain[1].ctime == ms,
        "start times: holder %llu (want %llu), parent %llu (want %llu)", n > 0 ? (unsigned long long)chain[0].ctime : 0,
        (unsigned long long)hs, n > 1 ? (unsigned long long)chain[1].ctime : 0, (unsigned long long)ms);
  CHECK(n >= 2 && chain[0].age_ms < 60000 && chain[1].age_ms < 60000, "ages under a minute (%llu, %llu ms)",
        n > 0 ? (unsigned long long)chain[0].age_ms : 0, n > 1 ? (unsigned long long)chain[1].age_ms : 0);
  char c = 'x';
  if (write(go, &c, 1) != 1) exit(2);
  status_of(middle);
  end(h.pid);
  wr_owners_free(o);
}

/* A program whose path is not UTF-8 (Linux paths are bytes): its path
 * comes out as UTF-8, each stray byte a '?'. */
TEST_CASE(non_utf8_path) {
  char dir[] = "/tmp/wr-owners-XXXXXX", exe[128], want[128];
  /* Latin-1, and a byte never in UTF-8 */
  CHECK(copy_self(dir, exe, sizeof exe, "caf\xe9-\xff") == 0, "copy the test program to a non-UTF-8 path");
  snprintf(want, sizeof want, "%s/caf?-?", dir);
  intercepted = want; /* the policy sees the repaired path */
  wr_owners *o = wr_owners_new(is_candidate, NULL);
  uint16_t port = 0;
  holder h = spawn_holder_exe(0, exe, &port);
  uint32_t pid = 0;
  char path[4096] = "";
  CHECK(o && find_udp(o, port, &pid, path, sizeof path) == 1 && pid == (uint32_t)h.pid, "found (PID %u)", pid);
  CHECK(strcmp(path, want) == 0, "path '%s', want '%s'", path, want);
  end(h.pid);
  wr_owners_free(o);
  drop_copy(dir, exe);
  intercepted = self_exe;
}

/* A child listed between its fork and its exec() (still this program: in
 * the tree of this program's path), looked up once it has exec()ed another
 * program: the owner's path is the new program's, and the process is
 * decided by it (left out when the tree leaves that program out). */
TEST_CASE(exec_late) {
  char dir[] = "/tmp/wr-owners-XXXXXX", other[128];
  wr_owners *o = owners_and_other(dir, other, sizeof other);
  if (!o) return;
  tree_in = self_exe;
  for (int out = 0; out < 2; out++) {
    tree_out = out ? other : NULL;
    wr_owners_policy_changed(o);
    char *const argv[] = {other, "--hold", NULL};
    holder h;
    uint16_t port = exec_after_listing(o, argv, &h);
    uint32_t pid = 0;
    char path[4096] = "";
    int found = find_udp(o, port, &pid, path, sizeof path);
    if (!out) {
      CHECK(found == 1 && pid == (uint32_t)h.pid, "in the tree: found (PID %u, want %d)", pid, (int)h.pid);
      CHECK(strcmp(path, other) == 0, "the owner's path '%s', want the program exec()ed, '%s'", path, other);
    } else {
      CHECK(found == 0, "left out of the tree after its exec() (found %d: PID %u, %s)", found, pid, path);
    }
    close(h.cmd);
    close(h.report);
    end(h.pid);
  }
  tree_in = tree_out = NULL;
  wr_owners_free(o);
  drop_copy(dir, other);
}

/* A child listed between its fork and its exec() of a launcher the tree
 * leaves out; the launcher starts a holder (another program): the holder's
 * ancestry names its parent by the launcher's path, and it is left out. */
TEST_CASE(parent_exec_late) {
  char dir[] = "/tmp/wr-owners-XXXXXX", other[128], ldir[] = "/tmp/wr-owners-XXXXXX", launcher[128];
  wr_owners *o = owners_and_other(dir, other, sizeof other);
  CHECK(copy_self(ldir, launcher, sizeof launcher, "launcher") == 0, "copy the test program as a launcher");
  if (!o) return;
  tree_in = self_exe;
  tree_out = launcher;
  wr_owners_policy_changed(o);
  char *const argv[] = {launcher, "--fork-exec", other, NULL};
  holder h;
  uint16_t port = exec_after_listing(o, argv, &h);
  pid_t middle = h.pid;
  uint32_t pid = 0;
  char path[4096] = "";
  int found = find_udp(o, port, &pid, path, sizeof path);
  CHECK(found == 0, "the launcher's child is left out of the tree (found %d: PID %u, %s)", found, pid, path);
  /* The tree without the exclusion: the holder is found, its parent named
   * by the launcher's path. */
  tree_out = NULL;
  wr_owners_policy_changed(o);
  wr_ancestor chain[WR_ANCESTRY_CAP];
  size_t n = 0;
  uint8_t lo[16] = {127, 0, 0, 1};
  found = wr_owners_find(o, IPPROTO_UDP, 4, 1, lo, port, lo, 9, &pid, path, sizeof path, chain, &n);
  CHECK(found == 1 && strcmp(path, other) == 0, "in the tree: found (%d: PID %u, %s)", found, pid, path);
  CHECK(n >= 3 && chain[1].pid == (uint32_t)middle && path_is(&chain[1], launcher) && chain[2].pid == (uint32_t)getpid(),
        "ancestry: the holder, the launcher %d at %s, this process (%zu entries; parent %u, %.*s)", (int)middle, launcher,
        n, n > 1 ? chain[1].pid : 0, n > 1 ? (int)chain[1].path_len : 0, n > 1 ? chain[1].path : "");
  close(h.cmd); /* the holder ends, then the launcher */
  close(h.report);
  CHECK(status_of(middle) == 0, "the launcher and its holder ended");
  tree_in = tree_out = NULL;
  wr_owners_free(o);
  drop_copy(dir, other);
  drop_copy(ldir, launcher);
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--hold") == 0) holder_main(0, 1);
  if (argc == 3 && strcmp(argv[1], "--fork-exec") == 0) {
    /* A launcher: a child runs argv[2] --hold (on this stdin and stdout). */
    pid_t c = fork();
    if (c == 0) {
      execl(argv[2], argv[2], "--hold", (char *)NULL);
      _exit(127);
    }
    return status_of(c) == 0 ? 0 : 3;
  }
  if (geteuid() != 0) {
    fprintf(stderr, "needs root (PID and network namespaces)\n");
    return 1;
  }
  ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
  if (n <= 0) return 2;
  self_exe[n] = '\0';
  /* A PID namespace of our own: a child unshares it, its first child is the
   * namespace's init (with a /proc of its own), and a child of that runs
   * the case. Only that last one ends with exit(): the sanitizers' leak
   * check at exit forks a helper, which neither the init nor the process
   * that unshared (once its init is gone) can. */
  pid_t child = fork();
  if (child < 0) return 2;
  if (child == 0) {
    if (unshare(CLONE_NEWPID | CLONE_NEWNS) != 0) {
      perror("unshare");
      quit(2);
    }
    pid_t init = fork();
    if (init == 0) {
      if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 || mount("proc", "/proc", "proc", 0, NULL) != 0) {
        perror("mount /proc");
        quit(2);
      }
      pid_t worker = fork();
      if (worker == 0) exit(tests_main(argc, argv));
      quit(status_of(worker));
    }
    quit(status_of(init));
  }
  return status_of(child);
}
