/* The shim's UTF-8 helpers (shim/utf8.c): validation, and cutting a text to
 * a byte budget at a character boundary from either end. */
#include "check.h" /* first: it sets _GNU_SOURCE */
#include "utf8.h"

TEST_CASE(cut) {
  /* "aé€😀": 1 + 2 + 3 + 4 bytes; the boundaries are at 0, 1, 3, 6, 10. */
  const char *s = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
  size_t n = strlen(s);
  static const size_t head_want[] = {0, 1, 1, 3, 3, 3, 6, 6, 6, 6, 10, 10};
  for (size_t cap = 0; cap < sizeof head_want / sizeof head_want[0]; cap++) {
    size_t k = wr_utf8_head(s, n, cap);
    CHECK(k == head_want[cap], "head with cap %zu: %zu bytes, want %zu", cap, k, head_want[cap]);
    CHECK(wr_utf8_valid((const unsigned char *)s, k), "head with cap %zu is valid UTF-8", cap);
  }
  /* From the end: the tails start at 10, 6, 3, 1, 0 (lengths 0, 4, 7, 9, 10). */
  static const size_t tail_want[] = {0, 0, 0, 0, 4, 4, 4, 7, 7, 9, 10, 10};
  for (size_t cap = 0; cap < sizeof tail_want / sizeof tail_want[0]; cap++) {
    size_t k = wr_utf8_tail(s, n, cap);
    CHECK(k == tail_want[cap], "tail with cap %zu: %zu bytes, want %zu", cap, k, tail_want[cap]);
    CHECK(wr_utf8_valid((const unsigned char *)s + n - k, k), "tail with cap %zu is valid UTF-8", cap);
  }
  CHECK(wr_utf8_head("", 0, 5) == 0 && wr_utf8_tail("", 0, 5) == 0, "empty text");
}

TEST_CASE(valid) {
  static const struct {
    const char *s;
    int ok;
  } t[] = {
      {"plain", 1},
      {"caf\xc3\xa9", 1},
      {"\xf4\x8f\xbf\xbf", 1},     /* U+10FFFF */
      {"\xff", 0},                 /* never in UTF-8 */
      {"\xc0\xaf", 0},             /* overlong '/' */
      {"\xe0\x80\xaf", 0},         /* overlong, three bytes */
      {"\xed\xa0\x80", 0},         /* a UTF-16 surrogate */
      {"\xf4\x90\x80\x80", 0},     /* above U+10FFFF */
      {"\xe2\x82", 0},             /* cut short */
      {"\x80", 0},                 /* a lone continuation byte */
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    CHECK(wr_utf8_valid((const unsigned char *)t[i].s, strlen(t[i].s)) == t[i].ok, "case %zu: valid should be %d", i,
          t[i].ok);
  }
}

/* Repair keeps every well-formed sequence and turns each stray byte into
 * '?', so the result is valid and as long as before. */
TEST_CASE(repair) {
  static const struct {
    const char *in, *out;
    size_t fixed;
  } t[] = {
      {"/usr/bin/caf\xc3\xa9", "/usr/bin/caf\xc3\xa9", 0},
      {"/opt/\xff\xfe.x", "/opt/??.x", 2},
      {"/a\xc3", "/a?", 1},                      /* cut short at the end */
      {"\xe2\x82 \xe2\x82\xac", "?? \xe2\x82\xac", 2}, /* a cut sequence before a whole one */
      {"\xed\xa0\x80", "???", 3},                /* a UTF-16 surrogate */
      {"\xc0\xaf", "??", 2},                      /* overlong */
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    char buf[64];
    size_t n = strlen(t[i].in);
    memcpy(buf, t[i].in, n + 1);
    size_t fixed = wr_utf8_repair(buf, n);
    CHECK(fixed == t[i].fixed && strcmp(buf, t[i].out) == 0, "case %zu: '%s' (%zu fixed), want '%s' (%zu)", i, buf,
          fixed, t[i].out, t[i].fixed);
    CHECK(wr_utf8_valid((const unsigned char *)buf, n), "case %zu: valid after repair", i);
  }
}


int main(int argc, char **argv) { return tests_main(argc, argv); }
