/*
 * test_errors.c - every error code renders into a readable message: each template is
 * filled with sample details and checked for leftover placeholders and for the broken
 * phrasing a template can hide ("growing the file to at file offset").  Every code has
 * a class and a structure.
 *
 * Usage: test_errors     (prints PASS/FAIL lines; tests/messages.test runs it)
 */
#include <stdio.h>
#include <string.h>

#include "vhdx.h"

static int failures;

static void result(bool ok, const char *name, const char *why, const char *message)
{
    if (ok)
        return;
    failures++;
    printf("FAIL %s: %s: \"%s\"\n", name, why, message);
}

int main(void)
{
    static const char *const bad_phrases[] = { " to at ", "  ", " ,", "(null)", "%" };
    char name[64], message[400];

    for (int code = 1; code < VHDX_ERROR_COUNT; code++) {
        const char *template = vhdx_error_template((enum vhdx_error)code);
        struct vhdx_diag diag = { (enum vhdx_error)code, 1234, 5678, "SAMPLE DETAIL", "" };
        enum vhdx_error_class class = vhdx_error_class((enum vhdx_error)code);
        enum vhdx_error_part part = vhdx_error_part((enum vhdx_error)code);

        snprintf(name, sizeof name, "message_%d", code);
        vhdx_describe(&diag, message, sizeof message);
        result(strlen(message) > 10, name, "too short to say anything", message);
        result(strcmp(template, "unknown error") != 0, name, "no template", message);
        for (size_t k = 0; k < sizeof bad_phrases / sizeof *bad_phrases; k++)
            result(!strstr(message, bad_phrases[k]), name, bad_phrases[k], message);
        result(!strstr(template, "%s") || strstr(message, "SAMPLE DETAIL"), name,
               "the text detail is lost", message);
        result(message[strlen(message) - 1] != ' ', name, "ends with a blank", message);
        result(class > VHDX_CLASS_NONE && class <= VHDX_CLASS_ARGUMENT, name, "no class",
               message);
        result(part < VHDX_PART_COUNT, name, "no structure", message);
    }
    printf("%s every_error_message_renders%s\n", failures ? "FAIL" : "PASS",
           failures ? ": see above" : "");
    printf("%s success_has_no_class\n",
           vhdx_error_class(VHDX_OK) == VHDX_CLASS_NONE ? "PASS" : "FAIL");
    printf("%s classes_of_the_platform_errors\n",
           vhdx_error_class(VHDX_E_IO) == VHDX_CLASS_IO &&
           vhdx_error_class(VHDX_E_NO_SPACE) == VHDX_CLASS_NO_SPACE &&
           vhdx_error_class(VHDX_E_READ_ONLY) == VHDX_CLASS_READ_ONLY &&
           vhdx_error_class(VHDX_E_BAT_PAST_EOF) == VHDX_CLASS_CORRUPT ? "PASS" : "FAIL");
    return 0;
}
