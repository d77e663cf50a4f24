/* The consumer's program: the checks of checks.c, linked in or from the
 * plugin (a shared library of the user's). */
int wr_consumer_checks(void);

int main(void) { return wr_consumer_checks() == 0 ? 0 : 1; }
