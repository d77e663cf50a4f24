/* A packet flood for the end-to-end hardening tests, from a raw socket (no
 * process owns these connections):
 *
 *   wr_flood syn|udp SRC DST PORT COUNT
 *
 * COUNT TCP SYNs or UDP datagrams from SRC (IPv4) with random source ports
 * to DST:PORT, as fast as the kernel takes them. Prints "sent N". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static uint16_t csum(const uint8_t *p, size_t n, uint32_t sum) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += (uint32_t)(p[i] << 8 | p[i + 1]);
  if (n & 1) sum += (uint32_t)p[n - 1] << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s syn|udp SRC DST PORT COUNT\n", argv[0]);
    return 2;
  }
  int udp = strcmp(argv[1], "udp") == 0;
  struct in_addr src, dst;
  inet_pton(AF_INET, argv[2], &src);
  inet_pton(AF_INET, argv[3], &dst);
  uint16_t port = (uint16_t)atoi(argv[4]);
  long count = atol(argv[5]);
  int s = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
  if (s < 0) {
    perror("raw socket");
    return 1;
  }
  struct sockaddr_in to = {AF_INET, htons(port), dst, {0}};
  uint8_t p[60];
  uint32_t seed = 88172645u;
  long sent = 0;
  for (long i = 0; i < count; i++) {
    size_t l4 = udp ? 8 + 4 : 20;
    size_t len = 20 + l4;
    memset(p, 0, sizeof p);
    p[0] = 0x45;
    p[2] = (uint8_t)(len >> 8);
    p[3] = (uint8_t)len;
    p[8] = 64;
    p[9] = udp ? 17 : 6;
    memcpy(p + 12, &src, 4);
    memcpy(p + 16, &dst, 4);
    uint16_t c = csum(p, 20, 0);
    p[10] = (uint8_t)(c >> 8);
    p[11] = (uint8_t)c;
    seed ^= seed << 13;
    seed ^= seed >> 17;
    seed ^= seed << 5;
    uint16_t sport = (uint16_t)(1024 + seed % 60000);
    uint8_t *t = p + 20;
    t[0] = (uint8_t)(sport >> 8);
    t[1] = (uint8_t)sport;
    t[2] = (uint8_t)(port >> 8);
    t[3] = (uint8_t)port;
    if (udp) {
      t[5] = (uint8_t)l4;
      memcpy(t + 8, "fld!", 4);
    } else {
      memcpy(t + 4, &seed, 4);
      t[12] = 5 << 4;
      t[13] = 0x02;
      t[14] = 0xff;
      t[15] = 0xff;
    }
    uint32_t a = ntohl(src.s_addr), b = ntohl(dst.s_addr);
    uint32_t ps = (a >> 16) + (a & 0xffff) + (b >> 16) + (b & 0xffff) + p[9] + (uint32_t)l4;
    c = csum(t, l4, ps);
    t[udp ? 6 : 16] = (uint8_t)(c >> 8);
    t[udp ? 7 : 17] = (uint8_t)c;
    if (sendto(s, p, len, 0, (struct sockaddr *)&to, sizeof to) == (ssize_t)len) sent++;
    else usleep(100); /* the queue is busy: give it a moment */
  }
  printf("sent %ld\n", sent);
  return 0;
}
