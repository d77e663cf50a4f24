#define _GNU_SOURCE
#include "capture/nfqueue/rules.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* A growing text buffer. */
typedef struct {
  char *s;
  size_t len, cap;
} text;

static void add(text *t, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt);
    int n = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (t->s && t->len + (size_t)n < t->cap) {
      t->len += (size_t)n;
      return;
    }
    size_t cap = (t->cap ? t->cap * 2 : 4096) + (size_t)n;
    char *s = realloc(t->s, cap);
    if (!s) return;
    t->s = s;
    t->cap = cap;
  }
}

/* Runs argv (no shell) with `input` on stdin; its stdout into *out when
 * given. Returns the exit status, or -1 when it could not start (errno). */
static int run(const char *const argv[], const text *input, text *out) {
  int in[2] = {-1, -1}, outp[2] = {-1, -1};
  if (pipe2(in, O_CLOEXEC) != 0) return -1;
  if (out && pipe2(outp, O_CLOEXEC) != 0) {
    close(in[0]);
    close(in[1]);
    return -1;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  if (out) posix_spawn_file_actions_adddup2(&fa, outp[1], 1);
  else posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  int rc = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(in[0]);
  if (out) close(outp[1]);
  if (rc != 0) {
    close(in[1]);
    if (out) close(outp[0]);
    errno = rc;
    return -1;
  }
  if (input && input->len) {
    size_t off = 0;
    while (off < input->len) {
      ssize_t w = write(in[1], input->s + off, input->len - off);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) break;
      off += (size_t)w;
    }
  }
  close(in[1]);
  if (out) {
    char buf[4096];
    ssize_t r;
    while ((r = read(outp[0], buf, sizeof buf)) != 0) {
      if (r < 0) {
        if (errno == EINTR) continue;
        break;
      }
      add(out, "%.*s", (int)r, buf);
    }
    close(outp[0]);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static const char *tool(int v6, int save) {
  if (save) return v6 ? "ip6tables-save" : "iptables-save";
  return v6 ? "ip6tables-restore" : "iptables-restore";
}

/* Applies a script with iptables-restore --noflush (all or nothing per table). */
static int restore(int v6, const text *script) {
  const char *argv[] = {tool(v6, 0), "-w", "--noflush", NULL};
  return run(argv, script, NULL);
}

static void name(char *out, size_t len, uint16_t queue, const char *part) {
  snprintf(out, len, "wredir%u-%s", (unsigned)queue, part);
}

/* The removal script for one table: every jump into one of our chains that
 * iptables-save shows, then the chains (declaring a chain flushes it). */
static void removal(text *script, int v6, const char *table, uint16_t queue) {
  const char *argv[] = {tool(v6, 1), "-t", table, NULL};
  text saved = {0};
  if (run(argv, NULL, &saved) != 0 || !saved.s) {
    free(saved.s);
    return;
  }
  char prefix[32];
  snprintf(prefix, sizeof prefix, "wredir%u-", (unsigned)queue);
  size_t plen = strlen(prefix);
  char chains[8][32];
  size_t n_chains = 0;
  text jumps = {0};
  for (char *save = NULL, *line = strtok_r(saved.s, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    if (line[0] == ':' && strncmp(line + 1, prefix, plen) == 0 && n_chains < 8) {
      /* ":wredirN-out - [0:0]" */
      snprintf(chains[n_chains++], sizeof chains[0], "%.*s", (int)strcspn(line + 1, " "), line + 1);
    } else if (strncmp(line, "-A ", 3) == 0 && strncmp(line + 3, prefix, plen) != 0) {
      /* A rule in a chain that is not ours jumping into one of ours. */
      char *jump = strstr(line, " -j ");
      if (jump && strncmp(jump + 4, prefix, plen) == 0) add(&jumps, "-D %s\n", line + 3);
    }
  }
  if (n_chains || jumps.len) {
    add(script, "*%s\n", table);
    for (size_t i = 0; i < n_chains; i++) add(script, ":%s - [0:0]\n", chains[i]);
    if (jumps.s) add(script, "%s", jumps.s);
    for (size_t i = 0; i < n_chains; i++) add(script, "-X %s\n", chains[i]);
    add(script, "COMMIT\n");
  }
  free(saved.s);
  free(jumps.s);
}

static void remove_family(int v6, uint16_t queue) {
  text script = {0};
  removal(&script, v6, "raw", queue);
  removal(&script, v6, "mangle", queue);
  if (script.len) restore(v6, &script);
  free(script.s);
}

void wr_rules_remove(uint16_t queue) {
  remove_family(0, queue);
  remove_family(1, queue);
}

/* Rules for one app port: the proxy's side is queued before conntrack (raw
 * table), and not again after it (mangle). Appended to an open script; with
 * del, the commands that delete them again. */
static void app_port_raw(text *s, uint16_t queue, uint16_t port, int del) {
  char raw[32];
  name(raw, sizeof raw, queue, "raw");
  for (int i = 0; i < 2; i++) {
    add(s, "%s %s -p %s --sport %u -j NFQUEUE --queue-num %u --queue-bypass\n", del ? "-D" : "-A", raw,
        i ? "udp" : "tcp", (unsigned)port, (unsigned)queue);
  }
}

static void app_port_mangle(text *s, uint16_t queue, uint16_t port, int del) {
  char out[32];
  name(out, sizeof out, queue, "out");
  for (int i = 0; i < 2; i++) {
    add(s, del ? "-D %s -p %s --sport %u -j RETURN\n" : "-I %s 3 -p %s --sport %u -j RETURN\n", out,
        i ? "udp" : "tcp", (unsigned)port);
  }
}

/* The rules of one app port in one table (raw: 0, mangle: 1), added or (del)
 * deleted. One restore per table: iptables-restore commits table by table,
 * so a failure leaves each table either whole or untouched. */
static int app_port_table(int v6, int table, uint16_t queue, uint16_t port, int del) {
  text s = {0};
  add(&s, table ? "*mangle\n" : "*raw\n");
  if (table) app_port_mangle(&s, queue, port, del);
  else app_port_raw(&s, queue, port, del);
  add(&s, "COMMIT\n");
  int rc = s.s ? restore(v6, &s) : -1;
  free(s.s);
  return rc;
}

static int install_family(int v6, uint16_t queue, uint16_t port) {
  char raw[32], out[32], in[32], save[32], q[64];
  name(raw, sizeof raw, queue, "raw");
  name(out, sizeof out, queue, "out");
  name(in, sizeof in, queue, "in");
  name(save, sizeof save, queue, "save");
  snprintf(q, sizeof q, "NFQUEUE --queue-num %u --queue-bypass", (unsigned)queue);
  unsigned m = WR_MARK;
  text s = {0};
  add(&s, "*raw\n:%s - [0:0]\n", raw);
  app_port_raw(&s, queue, port, 0);
  add(&s, "-I OUTPUT 1 -j %s\nCOMMIT\n", raw);
  add(&s, "*mangle\n:%s - [0:0]\n:%s - [0:0]\n:%s - [0:0]\n", out, in, save);
  /* Client side and new connections, after conntrack; never the proxy's
   * own excluded sockets. */
  add(&s, "-A %s -m mark --mark 0x%x/0x%x -j RETURN\n", out, WR_EXCLUDE_MARK, WR_EXCLUDE_MARK);
  add(&s, "-A %s -m mark --mark 0x%x/0x%x -j RETURN\n", out, m, m);
  add(&s, "-A %s -m connmark --mark 0x%x/0x%x -j %s\n", out, m, m, q);
  add(&s, "-A %s -p tcp --syn -j %s\n", out, q);
  add(&s, "-A %s -p udp -m conntrack --ctstate NEW -j %s\n", out, q);
  /* This host's own "unreachable" errors: one about a packet delivered
   * rewritten (to the proxy, or to a client) quotes ends conntrack never
   * saw, so no connmark brings it; the engine translates it. (Errors from
   * the network about a redirected connection's packets are RELATED to its
   * connection and come through the connmark rule of the "in" chain.) */
  add(&s, v6 ? "-A %s -p ipv6-icmp -m icmp6 --icmpv6-type destination-unreachable -j %s\n"
             : "-A %s -p icmp -m icmp --icmp-type destination-unreachable -j %s\n",
      out, q);
  app_port_mangle(&s, queue, port, 0);
  /* Inbound: new connections to this host, and redirected ones. */
  add(&s, "-A %s -m mark --mark 0x%x/0x%x -j RETURN\n", in, m, m);
  add(&s, "-A %s -m connmark --mark 0x%x/0x%x -j %s\n", in, m, m, q);
  add(&s, "-A %s -p tcp --syn -j %s\n", in, q);
  add(&s, "-A %s -p udp -m conntrack --ctstate NEW -j %s\n", in, q);
  /* Remember redirected connections in their conntrack mark. */
  add(&s, "-A %s -m mark --mark 0x%x/0x%x -j CONNMARK --save-mark --nfmask 0x%x --ctmask 0x%x\n", save, m, m, m, m);
  add(&s, "-I OUTPUT 1 -j %s\n-I PREROUTING 1 -j %s\n-I POSTROUTING 1 -j %s\n-I INPUT 1 -j %s\nCOMMIT\n", out, in,
      save, save);
  int rc = s.s ? restore(v6, &s) : -1;
  free(s.s);
  return rc;
}

int wr_rules_install(wr_rules *r, uint16_t queue, uint16_t app_port, char *err, size_t errlen) {
  memset(r, 0, sizeof *r);
  r->queue = queue;
  const char *probe[] = {"iptables-save", "-t", "mangle", NULL};
  text ignored = {0};
  int st = run(probe, NULL, &ignored);
  free(ignored.s);
  if (st < 0) {
    snprintf(err, errlen, "iptables not found (%s): install the iptables package", strerror(errno));
    return -1;
  }
  if (st != 0) {
    snprintf(err, errlen,
             "iptables failed (exit %d): run as root (or with CAP_NET_ADMIN), on a kernel with netfilter "
             "(iptable_mangle, iptable_raw)",
             st);
    return -1;
  }
  wr_rules_remove(queue); /* stale chains from a crashed run */
  if (install_family(0, queue, app_port) != 0) {
    wr_rules_remove(queue);
    snprintf(err, errlen,
             "could not install the iptables rules for queue %u (they need the NFQUEUE, CONNMARK, connmark, "
             "conntrack and mark extensions)",
             (unsigned)queue);
    return -1;
  }
  /* IPv6 is optional: a host without it still gets IPv4. */
  if (install_family(1, queue, app_port) == 0) r->have_v6 = 1;
  else remove_family(1, queue);
  r->app_ports[r->n_app_ports++] = app_port;
  return 0;
}

int wr_rules_add_app_port(wr_rules *r, uint16_t app_port, char *err, size_t errlen) {
  for (size_t i = 0; i < r->n_app_ports; i++) {
    if (r->app_ports[i] == app_port) return 0;
  }
  if (r->n_app_ports == sizeof r->app_ports / sizeof r->app_ports[0]) {
    snprintf(err, errlen, "too many app ports in one run (restart the redirector)");
    return -1;
  }
  /* All or nothing: when one table of one family fails, the tables done
   * before it are undone. */
  int tables = 2 * (1 + r->have_v6), done = 0; /* table k: family k / 2, raw or mangle k % 2 */
  while (done < tables && app_port_table(done / 2, done % 2, r->queue, app_port, 0) == 0) done++;
  if (done < tables) {
    int left = 0;
    for (int k = done - 1; k >= 0; k--) left |= app_port_table(k / 2, k % 2, r->queue, app_port, 1) != 0;
    snprintf(err, errlen, "could not add the %s rules (%s table) for app port %u%s", done / 2 ? "ip6tables" : "iptables",
             done % 2 ? "mangle" : "raw", (unsigned)app_port, left ? ", and some of those added could not be removed" : "");
    return -1;
  }
  r->app_ports[r->n_app_ports++] = app_port;
  return 0;
}
