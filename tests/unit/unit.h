/*
 * unit.h - what the unit programs share: case counting, one line per
 * failing case, and the group table that picks what to run.
 *
 * A unit program includes one of the three programs' .c files (compiled
 * with -Dmain=xxx_main, so it can call their static functions), then this
 * header, then defines its groups and
 *
 *     int main(int argc, char **argv) { return unit_main(argc, argv, groups); }
 *
 * "prog GROUP" runs one group, "prog" runs all of them. Each failing case
 * prints "FAIL function [case]: expected X, got Y" on stdout; each group
 * ends with "group: N cases, F failed". Exit 1 if any case failed, 2 on
 * an unknown group.
 */
#undef main	/* the program's own main is xxx_main; this one is ours */

#include <stdio.h>
#include <string.h>

/* Not every program uses every helper (gcc and clang both know this). */
#define UNIT_MAYBE_UNUSED __attribute__((unused))

struct unit_group {
	const char *name;
	void (*run)(void);
};

static unsigned long unit_cases, unit_failed;

/* unit_esc - bytes as C-escaped text for a failure line (cut at cap) */
static const char *unit_esc(const char *p, size_t n, char *out, size_t cap)
{
	size_t len = 0;

	out[0] = '\0';
	for (size_t i = 0; i < n && len + 5 < cap; i++) {
		unsigned char c = (unsigned char)p[i];
		int k;

		if (c == '\r')
			k = snprintf(out + len, cap - len, "\\r");
		else if (c == '\n')
			k = snprintf(out + len, cap - len, "\\n");
		else if (c == '\\' || c == '"')
			k = snprintf(out + len, cap - len, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			k = snprintf(out + len, cap - len, "\\x%02x", c);
		else
			k = snprintf(out + len, cap - len, "%c", c);
		if (k < 0 || (size_t)k >= cap - len)
			break;
		len += (size_t)k;
	}
	return out;
}

/* unit_check - count one case; on failure print what was expected and got */
static void unit_check(int ok, const char *fn, const char *name, const char *expected,
		       const char *got)
{
	unit_cases++;
	if (ok)
		return;
	unit_failed++;
	printf("FAIL %s [%s]: expected %s, got %s\n", fn, name, expected, got);
}

/* unit_long - a case whose result is an integer */
UNIT_MAYBE_UNUSED static void unit_long(const char *fn, const char *name, long long expected, long long got)
{
	char e[32], g[32];

	snprintf(e, sizeof e, "%lld", expected);
	snprintf(g, sizeof g, "%lld", got);
	unit_check(expected == got, fn, name, e, g);
}

/* unit_bytes - a case whose result is a byte string (NUL bytes allowed) */
UNIT_MAYBE_UNUSED static void unit_bytes(const char *fn, const char *name, const char *expected,
		       size_t elen, const char *got, size_t glen)
{
	char e[600], g[600], qe[604], qg[604];

	if (elen == glen && memcmp(expected, got, elen) == 0) {
		unit_check(1, fn, name, "", "");
		return;
	}
	snprintf(qe, sizeof qe, "\"%s\"", unit_esc(expected, elen, e, sizeof e));
	snprintf(qg, sizeof qg, "\"%s\"", unit_esc(got, glen, g, sizeof g));
	unit_check(0, fn, name, qe, qg);
}

/* unit_str - a case whose result is a C string */
UNIT_MAYBE_UNUSED static void unit_str(const char *fn, const char *name, const char *expected, const char *got)
{
	unit_bytes(fn, name, expected, strlen(expected), got, strlen(got));
}

/* unit_main - run the group named by argv[1], or every group */
static int unit_main(int argc, char **argv, const struct unit_group *groups)
{
	int ran = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (const struct unit_group *g = groups; g->name; g++) {
		unsigned long cases = unit_cases, failed = unit_failed;

		if (argc > 1 && strcmp(argv[1], g->name) != 0)
			continue;
		g->run();
		printf("%s: %lu cases, %lu failed\n", g->name, unit_cases - cases,
		       unit_failed - failed);
		ran++;
	}
	if (ran == 0) {
		fprintf(stderr, "unknown group %s\n", argc > 1 ? argv[1] : "(none)");
		return 2;
	}
	return unit_failed ? 1 : 0;
}
