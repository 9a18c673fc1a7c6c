/*
 * check.h - the PASS/FAIL line of the unit tests (tests/run.sh counts them), shared by
 * every tests/c program that reports case by case.  Each program is one translation
 * unit, so the definitions live here; main() returns `failures ? 1 : 0`.
 */
#ifndef TESTS_CHECK_H
#define TESTS_CHECK_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

static int failures;

/* PASS name, or FAIL name: the printf-style reason (and count the failure). */
static void check(bool ok, const char *name, const char *fmt, ...)
{
    va_list ap;

    if (ok) {
        printf("PASS %s\n", name);
        return;
    }
    failures++;
    printf("FAIL %s: ", name);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

#endif
