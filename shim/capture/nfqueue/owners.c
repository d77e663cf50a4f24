#define _GNU_SOURCE
#include "capture/nfqueue/owners.h"
#include "os/platform.h"
#include "utf8.h"

#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PROC_SLOTS 16384u /* power of two */
#define INODE_SLOTS 65536u
#define YOUNG 64          /* processes first seen lately, checked for exec() */
#define YOUNG_MS 2000

typedef struct {
  uint32_t pid; /* 0: free */
  uint64_t start;
  uint32_t ppid;   /* the parent when first read: its parent at creation, kept when it is re-parented */
  uint64_t pstart; /* that parent's start time, read right after: with ppid, the parent's identity */
  int candidate; /* 1 yes, 0 no, -1 not decided for this policy */
  uint32_t seen; /* the /proc listing that last saw it */
  uint64_t ino;  /* /proc/<pid>'s inode number: a new process gets a new one */
  uint64_t born;    /* when first seen (ms) */
  uint64_t checked; /* when its start time was last read (ms) */
  int last_fd;      /* where a looked-for socket was last found, or -1 */
  char *path;
  size_t path_len;
  uint64_t path_at; /* when path was read (boot_ms, taken before the readlink) */
} proc_entry;

typedef struct {
  uint64_t inode;
  uint32_t pid;
} inode_entry;

struct wr_owners {
  /* Guards everything below but diag (the look-ups' only) and chain_paths:
   * the owner look-ups (packet thread) and the listings (watch thread)
   * share the cache. The watch thread reads /proc outside it. */
  pthread_mutex_t lock;
  int diag; /* NETLINK_SOCK_DIAG socket */
  char *chain_paths; /* copies of the last find's ancestry paths (the caller's) */
  size_t chain_cap;
  wr_candidate_fn is_candidate;
  void *ctx;
  proc_entry *procs;
  inode_entry *inodes;
  uint32_t *cands; /* PIDs of candidates */
  size_t n_cands, cap_cands;
  uint32_t listing; /* /proc listings so far */
  uint32_t used;    /* process slots in use */
  uint32_t young[YOUNG];
  size_t n_young;
  uint32_t self; /* this process: never a candidate */
  uint64_t probe_hits;
};

/* ------------------------------------------------------------------------
 * sock_diag */

static uint64_t diag_inode(wr_owners *o, uint8_t proto, uint8_t family, const uint8_t src[16], uint16_t sport,
                           const uint8_t dst[16], uint16_t dport) {
  struct {
    struct nlmsghdr nlh;
    struct inet_diag_req_v2 r;
  } req;
  memset(&req, 0, sizeof req);
  req.nlh.nlmsg_len = sizeof req;
  req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.nlh.nlmsg_flags = NLM_F_REQUEST;
  req.r.sdiag_family = family == 6 ? AF_INET6 : AF_INET;
  req.r.sdiag_protocol = proto;
  req.r.idiag_states = ~0u;
  req.r.id.idiag_sport = htons(sport);
  req.r.id.idiag_dport = htons(dport);
  memcpy(req.r.id.idiag_src, src, family == 6 ? 16 : 4);
  memcpy(req.r.id.idiag_dst, dst, family == 6 ? 16 : 4);
  req.r.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  if (send(o->diag, &req, sizeof req, 0) < 0) return 0;
  union {
    struct nlmsghdr h;
    char buf[8192];
  } resp;
  ssize_t n = recv(o->diag, resp.buf, sizeof resp.buf, 0);
  if (n < (ssize_t)sizeof(struct nlmsghdr)) return 0;
  for (struct nlmsghdr *h = &resp.h; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
    if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY && h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct inet_diag_msg))) {
      const struct inet_diag_msg *m = NLMSG_DATA(h);
      return m->idiag_inode;
    }
    if (h->nlmsg_type == NLMSG_ERROR || h->nlmsg_type == NLMSG_DONE) break;
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * Processes */

static proc_entry *proc_slot(wr_owners *o, uint32_t pid, int create) {
  uint32_t h = (pid * 2654435761u) & (PROC_SLOTS - 1);
  for (uint32_t k = 0; k < PROC_SLOTS; k++) {
    proc_entry *p = &o->procs[(h + k) & (PROC_SLOTS - 1)];
    if (p->pid == pid) return p;
    if (p->pid == 0) {
      if (!create) return NULL;
      p->pid = pid;
      p->candidate = -1;
      p->last_fd = -1;
      p->seen = o->listing;
      o->used++;
      return p;
    }
  }
  return NULL;
}

/* The start time (field 22) and parent (field 4) of a process; 0 when it is gone. */
static uint64_t read_stat(uint32_t pid, uint32_t *ppid) {
  char name[64], buf[1024];
  snprintf(name, sizeof name, "/proc/%u/stat", pid);
  int fd = open(name, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  /* Field 22 (starttime), counted after the ')' that ends the name. */
  char *p = strrchr(buf, ')');
  if (!p) return 0;
  int field = 2;
  for (p++; *p && field < 22; p++) {
    if (*p == ' ') field++;
    if (field == 4 && *p == ' ') *ppid = (uint32_t)strtoul(p + 1, NULL, 10);
  }
  return strtoull(p, NULL, 10);
}

/* The executable path of a process (malloc'd, NUL-terminated, *len bytes;
 * "" when gone), or NULL when out of memory. */
static char *read_path(uint32_t pid, size_t *len) {
  char name[64], buf[4096];
  snprintf(name, sizeof name, "/proc/%u/exe", pid);
  ssize_t n = readlink(name, buf, sizeof buf - 1);
  if (n < 0) n = 0;
  buf[n] = '\0';
  /* A replaced or deleted executable reads "... (deleted)". */
  const char *del = " (deleted)";
  size_t dl = strlen(del);
  if ((size_t)n > dl && strcmp(buf + n - dl, del) == 0) n -= (ssize_t)dl;
  /* Linux paths are bytes; what the library hands on is UTF-8. */
  wr_utf8_repair(buf, (size_t)n);
  char *path = malloc((size_t)n + 1);
  *len = 0;
  if (path) {
    memcpy(path, buf, (size_t)n);
    path[n] = '\0';
    *len = (size_t)n;
  }
  return path;
}

/* Milliseconds since boot (the clock of /proc/<pid>/stat's start times). */
static uint64_t boot_ms(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_BOOTTIME, &ts) != 0) return 0;
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Clock ticks per second (the unit of /proc/<pid>/stat's start times). */
static uint64_t tick_hz(void) {
  static long hz;
  if (!hz) hz = sysconf(_SC_CLK_TCK) > 0 ? sysconf(_SC_CLK_TCK) : 100;
  return (uint64_t)hz;
}

/* A start time (clock ticks since boot) in boot_ms: the start of its tick. */
static uint64_t start_ms(uint64_t start) { return start * 1000u / tick_hz(); }

static void set_path(proc_entry *e) {
  free(e->path);
  e->path_at = boot_ms();
  e->path = read_path(e->pid, &e->path_len);
}

/* A process can exec() another program at any time; its PID and start time
 * (its identity) stay. Its path is read again (at most once per call) when
 * the one known may be from before such an exec() that matters: when it was
 * read before `after` (boot_ms; with the start time's tick counted in
 * full). The path is kept if the process is gone, or is no longer the one
 * the entry describes. 1 if the path changed (the entry's decision is then
 * undone: it is made again, by the new path). */
static int path_recheck(proc_entry *e, uint64_t after) {
  if (!e->path || e->start == 0 || e->start == UINT64_MAX || e->path_at >= after) return 0;
  uint64_t at = boot_ms();
  size_t len = 0;
  char *path = read_path(e->pid, &len);
  e->path_at = at;
  if (path && len == e->path_len && memcmp(path, e->path, len) == 0) {
    free(path); /* the common case: no exec() since, one readlink */
    return 0;
  }
  uint32_t unused = 0;
  /* Read after the readlink: the same process still (a PID reused in
   * between would give another start time, or none). */
  if (!path || len == 0 || read_stat(e->pid, &unused) != e->start) {
    /* Gone (or a zombie): its program can change no more. */
    free(path);
    return 0;
  }
  free(e->path);
  e->path = path;
  e->path_len = len;
  e->candidate = -1;
  return 1;
}

/* Records the inode of /proc/<pid> seen now. Another one than known means
 * the PID belongs to another process: everything known of it is read again
 * at the next refresh (even if both started in the same clock tick), and it
 * counts as young again. */
static void note_inode(proc_entry *e, uint64_t ino) {
  if (e->ino != 0 && e->ino != ino) {
    e->checked = 0;
    e->born = 0;
    e->start = UINT64_MAX;
    e->last_fd = -1;
  }
  e->ino = ino;
}

/* What is read of a process for its entry: by refresh_entry under the lock,
 * or by the watch thread's listing outside it (pid and ino: the listing's). */
typedef struct {
  uint32_t pid;
  uint64_t ino;
  uint64_t start; /* read_stat's: 0 when gone */
  uint32_t ppid;
  uint64_t pstart;
  char *path; /* read_path's (owned until taken) */
  size_t path_len;
  uint64_t path_at;
} proc_facts;

/* Whether the entry is due a look at its process (its start time is read
 * again at most once a second, or at once after note_inode saw another
 * process); if so, the look is counted as made now. */
static int refresh_due(proc_entry *e) {
  uint64_t now = wr_now_ms();
  if (e->path && now - e->checked < 1000) return 0;
  e->checked = now;
  return 1;
}

/* Whether the entry stays as it is with start time `st` read now: the same
 * process, or one gone (what is known of it stays, a child's ancestry may
 * name it, until a listing no longer has it). */
static int entry_stands(const proc_entry *e, uint64_t st) {
  return e->path && (st == e->start || (st == 0 && e->start != UINT64_MAX));
}

/* The rest of r after its start time and parent: the parent's start time
 * and the executable. */
static void read_facts(proc_facts *r) {
  uint32_t unused = 0;
  r->pstart = r->ppid ? read_stat(r->ppid, &unused) : 0;
  r->path_at = boot_ms();
  r->path = read_path(r->pid, &r->path_len);
}

/* The entry takes r's facts (and its path) and is decided again. The
 * parent's identity: a parent younger than the process is its PID reused
 * (the parent exited in between), so not known. */
static void take_facts(proc_entry *e, proc_facts *r) {
  e->start = r->start;
  e->pstart = r->pstart;
  e->ppid = r->pstart != 0 && r->pstart <= r->start ? r->ppid : 0;
  free(e->path);
  e->path = r->path;
  e->path_len = r->path_len;
  e->path_at = r->path_at;
  r->path = NULL;
  e->candidate = -1;
}

/* Makes sure the entry describes the process that has this PID now. */
static void refresh_entry(proc_entry *e) {
  if (!refresh_due(e)) return;
  proc_facts r = {.pid = e->pid};
  r.start = read_stat(e->pid, &r.ppid);
  if (entry_stands(e, r.start)) return;
  read_facts(&r);
  take_facts(e, &r);
}

/* The ancestry of a process as far as it can be seen: the process, then the
 * parent it had when first read (its parent at its creation, if read before
 * a re-parenting), and so on. A parent gone and never read, or one created
 * after its child (the PID reused), ends it. Paths point into the entries.
 * A parent's path read before its child started may be the program it ran
 * before an exec() (a shell forked, listed, then exec()ing a launcher that
 * starts the child): it is read again, once per such child (path_recheck),
 * so the child is decided under the program that started it. */
static size_t ancestry(wr_owners *o, proc_entry *e, wr_ancestor *chain, size_t cap) {
  uint64_t now = boot_ms();
  uint64_t tick = 1000u / tick_hz() + 1;
  size_t n = 0;
  proc_entry *cur = e;
  while (n < cap) {
    uint64_t born = start_ms(cur->start);
    chain[n].pid = cur->pid;
    chain[n].ctime = cur->start;
    chain[n].age_ms = now >= born ? now - born : 0;
    chain[n].path = cur->path ? cur->path : "";
    chain[n].path_len = cur->path_len;
    n++;
    if (cur->ppid == 0 || cur->ppid == cur->pid) break;
    proc_entry *par = proc_slot(o, cur->ppid, 1);
    if (!par) break;
    if (!par->path) refresh_entry(par);
    if (par->start != cur->pstart) {
      /* The entry describes another process at that PID now (the parent
       * exited and its PID was reused): the parent is named by its identity
       * alone (the engine may remember it), and the ancestry ends there. */
      if (n < cap) {
        uint64_t pborn = start_ms(cur->pstart);
        chain[n] = (wr_ancestor){cur->ppid, cur->pstart, now >= pborn ? now - pborn : 0, "", 0};
        n++;
      }
      break;
    }
    /* A PID met again (only PIDs reused within one clock tick could loop)
     * ends it: no entry's path is read again while the chain points to it. */
    for (size_t j = 0; j < n; j++) {
      if (chain[j].pid == par->pid) return n;
    }
    /* (The child's start time is a clock tick: it started within it.) */
    path_recheck(par, born + tick);
    cur = par;
  }
  return n;
}

static int decide(wr_owners *o, proc_entry *e) {
  if (e->candidate < 0) {
    wr_ancestor chain[WR_ANCESTRY_CAP];
    size_t n = ancestry(o, e, chain, WR_ANCESTRY_CAP);
    e->candidate = o->is_candidate(o->ctx, chain, n) ? 1 : 0;
  }
  return e->candidate;
}

static void add_candidate(wr_owners *o, uint32_t pid) {
  for (size_t i = 0; i < o->n_cands; i++) {
    if (o->cands[i] == pid) return;
  }
  if (o->n_cands == o->cap_cands) {
    size_t cap = o->cap_cands ? o->cap_cands * 2 : 64;
    uint32_t *c = realloc(o->cands, cap * sizeof *c);
    if (!c) return;
    o->cands = c;
    o->cap_cands = cap;
  }
  o->cands[o->n_cands++] = pid;
}

/* ------------------------------------------------------------------------
 * Sockets of processes */

static void inode_put(wr_owners *o, uint64_t inode, uint32_t pid) {
  o->inodes[(inode * 0x9e3779b97f4a7c15ull >> 40) & (INODE_SLOTS - 1)] = (inode_entry){inode, pid};
}

static uint32_t inode_get(wr_owners *o, uint64_t inode) {
  inode_entry *e = &o->inodes[(inode * 0x9e3779b97f4a7c15ull >> 40) & (INODE_SLOTS - 1)];
  return e->inode == inode ? e->pid : 0;
}

/* The socket inode a /proc/<pid>/fd entry links to ("socket:[N]"), or 0
 * (not a socket, or gone). name is relative to dirfd, or absolute. */
static uint64_t socket_inode(int dirfd, const char *name) {
  char link[64];
  ssize_t n = readlinkat(dirfd, name, link, sizeof link - 1);
  if (n < 9) return 0;
  link[n] = '\0';
  return strncmp(link, "socket:[", 8) == 0 ? strtoull(link + 8, NULL, 10) : 0;
}

/* Is `want` the socket at descriptor fd of pid? A program opening one
 * connection after another mostly gets the same descriptor number each
 * time (the lowest free one): one readlink instead of a whole scan. */
static int probe_fd(uint32_t pid, int fd, uint64_t want) {
  char name[64];
  snprintf(name, sizeof name, "/proc/%u/fd/%d", pid, fd);
  return socket_inode(AT_FDCWD, name) == want;
}

/* Records the socket inodes a process holds; 1 if `want` is among them
 * (and its descriptor is remembered for probe_fd). */
static int scan_fds(wr_owners *o, uint32_t pid, uint64_t want) {
  char name[64];
  snprintf(name, sizeof name, "/proc/%u/fd", pid);
  int dfd = open(name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return 0;
  DIR *d = fdopendir(dfd);
  if (!d) {
    close(dfd);
    return 0;
  }
  int found = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] < '0' || de->d_name[0] > '9') continue;
    uint64_t inode = socket_inode(dfd, de->d_name);
    if (inode == 0) continue;
    inode_put(o, inode, pid);
    if (inode == want && !found) {
      found = 1;
      proc_entry *e = proc_slot(o, pid, 0);
      if (e) e->last_fd = atoi(de->d_name);
    }
  }
  closedir(d);
  return found;
}

/* Drops the entries of processes gone from the last listing (rehashing the
 * rest), so the table never fills with the dead. */
static void prune(wr_owners *o) {
  proc_entry *old = o->procs;
  proc_entry *fresh = calloc(PROC_SLOTS, sizeof *fresh);
  if (!fresh) return;
  o->procs = fresh;
  o->used = 0;
  for (uint32_t i = 0; i < PROC_SLOTS; i++) {
    if (old[i].pid == 0) continue;
    if (old[i].seen != o->listing) {
      free(old[i].path);
      continue;
    }
    proc_entry *e = proc_slot(o, old[i].pid, 1);
    if (e) *e = old[i];
    else free(old[i].path);
  }
  free(old);
  size_t k = 0;
  for (size_t i = 0; i < o->n_cands; i++) {
    proc_entry *e = proc_slot(o, o->cands[i], 0);
    if (e && e->candidate == 1) o->cands[k++] = o->cands[i];
  }
  o->n_cands = k;
}

/* Processes seen lately may exec() another program right after their fork
 * (a shell running curl): their executable is read again on a miss,
 * candidates' too (one may have become a program the policy leaves out).
 * Returns the PID owning `want` if one of them became a candidate, or 0. */
static uint32_t revalidate_young(wr_owners *o, uint64_t want) {
  uint64_t now = wr_now_ms();
  size_t k = 0;
  uint32_t owner = 0;
  for (size_t i = 0; i < o->n_young; i++) {
    proc_entry *e = proc_slot(o, o->young[i], 0);
    if (!e || now - e->born > YOUNG_MS) continue;
    o->young[k++] = o->young[i];
    int was = e->candidate == 1; /* (then already scanned as a candidate) */
    if (!path_recheck(e, UINT64_MAX)) continue;
    if (decide(o, e)) {
      add_candidate(o, e->pid);
      if (!was && !owner && scan_fds(o, e->pid, want)) owner = e->pid;
    }
  }
  o->n_young = k;
  return owner;
}

/* Is `want` a socket of this very process (the proxy's own connections,
 * most of the misses)? fstat() on our own descriptors is far cheaper than
 * reading /proc links, and the sockets seen are remembered. */
static int owned_by_self(wr_owners *o, uint64_t want) {
  int dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return 0;
  DIR *d = fdopendir(dfd);
  if (!d) {
    close(dfd);
    return 0;
  }
  int found = 0, n = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL && n < 65536) {
    if (de->d_name[0] < '0' || de->d_name[0] > '9') continue;
    int fd = atoi(de->d_name);
    struct stat st;
    n++;
    if (fd == dfd || fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    inode_put(o, (uint64_t)st.st_ino, o->self);
    if ((uint64_t)st.st_ino == want) found = 1;
  }
  closedir(d);
  return found;
}

/* A process a listing found new (its entry just read): noted as young, and
 * decided; a candidate's sockets are recorded. 1 if it holds `want`. */
static int listed_decide(wr_owners *o, proc_entry *e, uint64_t now, uint64_t want) {
  if (e->born == 0) {
    e->born = now;
    /* Everything there at the first listing is old; a process appearing
     * later may still exec(). The oldest young entry makes room. */
    if (o->listing > 1) {
      if (o->n_young == YOUNG) memmove(o->young, o->young + 1, (YOUNG - 1) * sizeof o->young[0]), o->n_young--;
      o->young[o->n_young++] = e->pid;
    }
  }
  if (!decide(o, e)) return 0;
  add_candidate(o, e->pid);
  return scan_fds(o, e->pid, want);
}

/* Lists /proc: new processes are decided; returns the PID owning `want`
 * among new candidates, or 0. */
static uint32_t rescan(wr_owners *o, uint64_t want) {
  DIR *d = opendir("/proc");
  if (!d) return 0;
  o->listing++;
  uint64_t now = wr_now_ms();
  uint32_t owner = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] < '1' || de->d_name[0] > '9') continue;
    uint32_t pid = (uint32_t)strtoul(de->d_name, NULL, 10);
    proc_entry *e = proc_slot(o, pid, 1);
    if (!e) continue;
    e->seen = o->listing;
    /* Known and decided, and still the same process: its sockets were
     * scanned before (a candidate's are scanned again in find). Only new
     * processes cost a read of their stat and exe here. */
    if (e->path != NULL && e->candidate >= 0 && e->ino == (uint64_t)de->d_ino) continue;
    note_inode(e, (uint64_t)de->d_ino);
    refresh_entry(e);
    if (listed_decide(o, e, now, want) && !owner) owner = pid;
  }
  closedir(d);
  if (o->used > PROC_SLOTS / 2) prune(o);
  return owner;
}

/* ------------------------------------------------------------------------ */

wr_owners *wr_owners_new(wr_candidate_fn is_candidate, void *ctx) {
  wr_owners *o = calloc(1, sizeof *o);
  if (!o) return NULL;
  pthread_mutex_init(&o->lock, NULL);
  o->is_candidate = is_candidate;
  o->ctx = ctx;
  o->self = (uint32_t)getpid();
  o->procs = calloc(PROC_SLOTS, sizeof *o->procs);
  o->inodes = calloc(INODE_SLOTS, sizeof *o->inodes);
  o->diag = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (!o->procs || !o->inodes || o->diag < 0) {
    wr_owners_free(o);
    return NULL;
  }
  struct timeval tv = {0, 200000};
  setsockopt(o->diag, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  /* The processes there at start: later ones are "young" (they may still
   * exec another program). */
  rescan(o, 0);
  return o;
}

void wr_owners_free(wr_owners *o) {
  if (!o) return;
  if (o->procs) {
    for (uint32_t i = 0; i < PROC_SLOTS; i++) free(o->procs[i].path);
  }
  if (o->diag >= 0) close(o->diag);
  free(o->procs);
  free(o->inodes);
  free(o->cands);
  free(o->chain_paths);
  pthread_mutex_destroy(&o->lock);
  free(o);
}

uint64_t wr_owners_probe_hits(wr_owners *o) {
  pthread_mutex_lock(&o->lock);
  uint64_t n = o->probe_hits;
  pthread_mutex_unlock(&o->lock);
  return n;
}

/* ------------------------------------------------------------------------
 * The watch thread's listing: /proc is read outside the lock; the cache is
 * consulted and updated in two short critical sections. */

/* What refresh_entry does, with what was read before the lock was taken. */
static void apply_read(proc_entry *e, proc_facts *r) {
  if (!refresh_due(e) || entry_stands(e, r->start)) return;
  take_facts(e, r);
  if (!e->path) set_path(e); /* out of memory before: try once more, under the lock */
}

void wr_owners_watch(wr_owners *o) {
  /* 1. The listing (no lock). */
  DIR *d = opendir("/proc");
  if (!d) return;
  proc_facts *l = NULL;
  size_t n = 0, cap = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] < '1' || de->d_name[0] > '9') continue;
    if (n == cap) {
      size_t c = cap ? cap * 2 : 1024;
      proc_facts *nl = realloc(l, c * sizeof *nl);
      if (!nl) break;
      l = nl;
      cap = c;
    }
    l[n++] = (proc_facts){.pid = (uint32_t)strtoul(de->d_name, NULL, 10), .ino = (uint64_t)de->d_ino};
  }
  closedir(d);
  /* 2. Which are new (lock): known, decided and still the same process are
   * only marked seen. */
  size_t k = 0;
  pthread_mutex_lock(&o->lock);
  o->listing++;
  for (size_t i = 0; i < n; i++) {
    proc_entry *e = proc_slot(o, l[i].pid, 0);
    if (e && e->path != NULL && e->candidate >= 0 && e->ino == l[i].ino) {
      e->seen = o->listing;
      continue;
    }
    l[k++] = l[i];
  }
  pthread_mutex_unlock(&o->lock);
  n = k;
  /* 3. The new ones' stat, parent and executable (no lock). */
  for (size_t i = 0; i < n; i++) {
    l[i].start = read_stat(l[i].pid, &l[i].ppid);
    read_facts(&l[i]);
  }
  /* 4. Into the cache, and decided (lock), as rescan does. */
  pthread_mutex_lock(&o->lock);
  uint64_t now = wr_now_ms();
  for (size_t i = 0; i < n; i++) {
    uint32_t pid = l[i].pid;
    proc_entry *e = proc_slot(o, pid, 1);
    if (!e) continue;
    e->seen = o->listing;
    if (e->path != NULL && e->candidate >= 0 && e->ino == l[i].ino) continue; /* a find's rescan did it */
    note_inode(e, l[i].ino);
    apply_read(e, &l[i]);
    listed_decide(o, e, now, 0);
  }
  if (o->used > PROC_SLOTS / 2) prune(o);
  pthread_mutex_unlock(&o->lock);
  for (size_t i = 0; i < n; i++) free(l[i].path);
  free(l);
}

void wr_owners_policy_changed(wr_owners *o) {
  pthread_mutex_lock(&o->lock);
  for (uint32_t i = 0; i < PROC_SLOTS; i++) o->procs[i].candidate = -1;
  o->n_cands = 0;
  pthread_mutex_unlock(&o->lock);
}

static int answer(wr_owners *o, uint32_t pid, uint32_t *out_pid, char *path, size_t pathcap, wr_ancestor *chain,
                  size_t *n_chain) {
  proc_entry *e = proc_slot(o, pid, 1);
  if (!e) return 0;
  /* The socket was found under this PID just now; is it still the process
   * the entry knows (a cached decision must not pass to a PID's next
   * owner)? */
  char name[32];
  struct stat st;
  snprintf(name, sizeof name, "/proc/%u", pid);
  if (stat(name, &st) == 0) note_inode(e, (uint64_t)st.st_ino);
  uint64_t t0 = boot_ms();
  refresh_entry(e);
  /* A path read in the process's first YOUNG_MS may be from before an
   * exec() (listed between fork and exec, a shell about to run curl): read
   * again while so (a readlink per look-up in that time at most), and the
   * process decided again if it changed. */
  if (e->path_at < t0) path_recheck(e, start_ms(e->start) + YOUNG_MS);
  if (!decide(o, e)) return 0;
  *out_pid = pid;
  size_t n = e->path_len < pathcap - 1 ? e->path_len : pathcap - 1;
  memcpy(path, e->path ? e->path : "", n);
  path[n] = '\0';
  if (chain && n_chain) {
    *n_chain = ancestry(o, e, chain, WR_ANCESTRY_CAP);
    chain[0].path = path;
    chain[0].path_len = n;
  }
  return 1;
}

/* The owner of a socket inode (wr_owners_find), lock held. */
static int find_locked(wr_owners *o, uint64_t inode, uint32_t *pid, char *path, size_t pathcap, wr_ancestor *chain,
                       size_t *n_chain) {
  uint32_t p = inode_get(o, inode);
  if (p == o->self) return 0;
  if (p && answer(o, p, pid, path, pathcap, chain, n_chain)) return 1;
  /* Known candidates first (they may have opened a new socket), at the
   * descriptor of their last one, then all of theirs... */
  for (size_t i = 0; i < o->n_cands; i++) {
    proc_entry *e = proc_slot(o, o->cands[i], 0);
    if (e && e->last_fd >= 0 && probe_fd(e->pid, e->last_fd, inode)) {
      o->probe_hits++;
      inode_put(o, inode, e->pid);
      return answer(o, e->pid, pid, path, pathcap, chain, n_chain);
    }
  }
  for (size_t i = 0; i < o->n_cands; i++) {
    if (scan_fds(o, o->cands[i], inode)) return answer(o, o->cands[i], pid, path, pathcap, chain, n_chain);
  }
  /* ...then processes that may have exec()ed since we saw them... */
  p = revalidate_young(o, inode);
  if (p) return answer(o, p, pid, path, pathcap, chain, n_chain);
  /* ...then our own sockets: most misses are the proxy's own upstream
   * connections, which need no listing of /proc... */
  if (owned_by_self(o, inode)) return 0;
  /* ...and only then new processes. */
  p = rescan(o, inode);
  return p ? answer(o, p, pid, path, pathcap, chain, n_chain) : 0;
}

/* The ancestry's paths point into the cache, which the watch thread may
 * change once the lock is released: they are copied (lock held). */
static void copy_chain_paths(wr_owners *o, wr_ancestor *chain, size_t n) {
  size_t need = 0;
  for (size_t i = 1; i < n; i++) need += chain[i].path_len + 1;
  if (need > o->chain_cap) {
    char *c = realloc(o->chain_paths, need);
    if (!c) {
      for (size_t i = 1; i < n; i++) chain[i].path = "", chain[i].path_len = 0;
      return;
    }
    o->chain_paths = c;
    o->chain_cap = need;
  }
  size_t at = 0;
  for (size_t i = 1; i < n; i++) {
    memcpy(o->chain_paths + at, chain[i].path, chain[i].path_len);
    o->chain_paths[at + chain[i].path_len] = '\0';
    chain[i].path = o->chain_paths + at;
    at += chain[i].path_len + 1;
  }
}

int wr_owners_find(wr_owners *o, uint8_t proto, uint8_t family, int inbound, const uint8_t local[16],
                   uint16_t lport, const uint8_t remote[16], uint16_t rport, uint32_t *pid, char *path,
                   size_t pathcap, wr_ancestor *chain, size_t *n_chain) {
  if (n_chain) *n_chain = 0;
  uint64_t inode;
  (void)inbound;
  /* TCP lookups name the local end first; UDP lookups the remote end
   * (INET_DIAG's UDP lookup is a receive-side one). */
  if (proto == IPPROTO_UDP) inode = diag_inode(o, proto, family, remote, rport, local, lport);
  else inode = diag_inode(o, proto, family, local, lport, remote, rport);
  if (proto == IPPROTO_UDP && inode == 0) {
    /* An unconnected socket bound to the port: ask with any remote. */
    static const uint8_t any[16];
    inode = diag_inode(o, proto, family, any, 0, local, lport);
  }
  if (inode == 0) return 0;
  pthread_mutex_lock(&o->lock);
  int r = find_locked(o, inode, pid, path, pathcap, chain, n_chain);
  if (r && chain && n_chain) copy_chain_paths(o, chain, *n_chain);
  pthread_mutex_unlock(&o->lock);
  return r;
}
