/* The "internet" of the end-to-end tests: TCP and UDP echo servers.
 *
 *   wr_testserver ADDR PORT [ADDR PORT ...]
 *
 * Each TCP connection gets back every byte it sends (until it shuts down
 * its side); each UDP datagram is answered with itself. Prints "ready" when
 * listening. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void *echo(void *arg) {
  int s = (int)(intptr_t)arg;
  char buf[65536];
  for (;;) {
    ssize_t n = read(s, buf, sizeof buf);
    if (n <= 0) break;
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(s, buf + off, (size_t)(n - off));
      if (w <= 0) goto done;
      off += w;
    }
  }
done:
  shutdown(s, SHUT_WR);
  close(s);
  return NULL;
}

static void *tcp_loop(void *arg) {
  int ls = (int)(intptr_t)arg;
  for (;;) {
    int s = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    if (s < 0) continue;
    pthread_t t;
    pthread_create(&t, NULL, echo, (void *)(intptr_t)s);
    pthread_detach(t);
  }
  return NULL;
}

static void *udp_loop(void *arg) {
  int s = (int)(intptr_t)arg;
  char buf[65536];
  for (;;) {
    struct sockaddr_storage peer;
    socklen_t pl = sizeof peer;
    ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&peer, &pl);
    if (n >= 0) sendto(s, buf, (size_t)n, 0, (struct sockaddr *)&peer, pl);
  }
  return NULL;
}

static int sock(const char *addr, int port, int type) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t sl;
  int family = strchr(addr, ':') ? AF_INET6 : AF_INET;
  if (family == AF_INET) {
    struct sockaddr_in *a = (void *)&ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, addr, &a->sin_addr);
    sl = sizeof *a;
  } else {
    struct sockaddr_in6 *a = (void *)&ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    inet_pton(AF_INET6, addr, &a->sin6_addr);
    sl = sizeof *a;
  }
  int s = socket(family, type | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (family == AF_INET6) setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (bind(s, (struct sockaddr *)&ss, sl) != 0) {
    fprintf(stderr, "bind %s:%d: %s\n", addr, port, strerror(errno));
    exit(1);
  }
  if (type == SOCK_STREAM) listen(s, 1024);
  return s;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  for (int i = 1; i + 1 < argc; i += 2) {
    pthread_t t;
    pthread_create(&t, NULL, tcp_loop, (void *)(intptr_t)sock(argv[i], atoi(argv[i + 1]), SOCK_STREAM));
    pthread_detach(t);
    pthread_create(&t, NULL, udp_loop, (void *)(intptr_t)sock(argv[i], atoi(argv[i + 1]), SOCK_DGRAM));
    pthread_detach(t);
  }
  printf("ready\n");
  fflush(stdout);
  pause();
  return 0;
}
