/*
 * corpus_main.c - run fuzz inputs through the fuzz target without libFuzzer: the
 * regression pass of `make check` (tests/fuzz_corpus.test) and the coverage build.
 *
 * Usage: fuzz_corpus [--prefix NAME] PATH...   (files, or directories of files)
 * Each input runs in a child process, so one failure (an invariant, a sanitizer report,
 * a hang) is reported as "FAIL PREFIX_FILE: the first line that says why" and the others
 * still run.  Without --prefix the input runs in this process (for coverage and
 * debugging).
 */
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SECONDS_PER_INPUT 120

static int failures;

static uint8_t *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    uint8_t *data = NULL;
    long n;

    if (f && !fseek(f, 0, SEEK_END) && (n = ftell(f)) >= 0 && !fseek(f, 0, SEEK_SET)) {
        data = malloc((size_t)n + 1);
        if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
            free(data);
            data = NULL;
        }
        *size = (size_t)n;
    }
    if (f)
        fclose(f);
    return data;
}

/* The line of the child's stderr that best says why it failed. */
static void first_reason(const char *text, char *out, size_t size)
{
    static const char *const markers[] = { "INVARIANT ", "ERROR: AddressSanitizer",
                                           "runtime error", "ERROR: LeakSanitizer", NULL };

    snprintf(out, size, "%s", "no reason printed");
    for (int i = 0; markers[i]; i++) {
        const char *p = strstr(text, markers[i]);

        if (p) {
            size_t n = strcspn(p, "\n");

            snprintf(out, size, "%.*s", (int)(n < size - 1 ? n : size - 1), p);
            return;
        }
    }
}

static void run_one(const char *prefix, const char *path)
{
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    size_t size = 0;
    uint8_t *data;
    int pipefd[2], status;
    pid_t pid;
    char *text = NULL, reason[400];
    size_t len = 0, cap = 0;
    ssize_t n;

    if (!prefix) {
        data = slurp(path, &size);
        if (!data) {
            fprintf(stderr, "cannot read %s\n", path);
            exit(2);
        }
        LLVMFuzzerTestOneInput(data, size);
        free(data);
        return;
    }
    if (pipe(pipefd))
        exit(2);
    fflush(stdout);
    pid = fork();
    if (pid < 0)
        exit(2);
    if (pid == 0) {
        close(pipefd[0]);
        dup2(pipefd[1], STDERR_FILENO);
        alarm(SECONDS_PER_INPUT);
        data = slurp(path, &size);
        if (!data)
            _exit(3);
        LLVMFuzzerTestOneInput(data, size);
        free(data);
        exit(0);            /* exit, not _exit: LeakSanitizer runs at exit */
    }
    close(pipefd[1]);
    for (;;) {
        if (len + 4096 > cap) {
            cap = cap ? 2 * cap : 65536;
            text = realloc(text, cap + 1);
            if (!text)
                exit(2);
        }
        n = read(pipefd[0], text + len, cap - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    text[len] = '\0';
    close(pipefd[0]);
    waitpid(pid, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        printf("PASS %s_%s\n", prefix, base);
    } else {
        failures++;
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
            snprintf(reason, sizeof reason, "still running after %d s", SECONDS_PER_INPUT);
        else
            first_reason(text, reason, sizeof reason);
        printf("FAIL %s_%s: %s\n", prefix, base, reason);
        /* The detail, for the suite's output when it fails. */
        printf("%.*s\n", (int)(len < 3000 ? len : 3000), text);
    }
    free(text);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_path(const char *prefix, const char *path)
{
    struct stat st;
    DIR *dir;
    struct dirent *e;
    char **names = NULL;
    size_t count = 0;

    if (stat(path, &st) || !S_ISDIR(st.st_mode)) {
        run_one(prefix, path);
        return;
    }
    dir = opendir(path);
    while (dir && (e = readdir(dir))) {
        char full[4096];

        size_t n = strlen(e->d_name);

        /* Hidden files and notes (README.md) are not inputs. */
        if (e->d_name[0] == '.' || (n > 3 && !strcmp(e->d_name + n - 3, ".md")))
            continue;
        snprintf(full, sizeof full, "%s/%s", path, e->d_name);
        names = realloc(names, (count + 1) * sizeof *names);
        if (!names || !(names[count++] = strdup(full)))
            exit(2);
    }
    if (dir)
        closedir(dir);
    qsort(names, count, sizeof *names, by_name);
    for (size_t i = 0; i < count; i++) {
        run_one(prefix, names[i]);
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv)
{
    const char *prefix = NULL;
    int first = 1;

    if (argc > 2 && !strcmp(argv[1], "--prefix")) {
        prefix = argv[2];
        first = 3;
    }
    if (first >= argc) {
        fprintf(stderr, "usage: fuzz_corpus [--prefix NAME] PATH...\n");
        return 2;
    }
    LLVMFuzzerInitialize(&argc, &argv);
    for (int i = first; i < argc; i++)
        run_path(prefix, argv[i]);
    return failures ? 1 : 0;
}
