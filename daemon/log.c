/* Logger shared by the daemon and the stages (see log.h). One write() per line keeps lines whole
 * when threads log at the same time. */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static enum nlpd_log_level current_level = NLPD_LOG_INFO;
static enum nlpd_log_format current_format = NLPD_LOG_TEXT;
static int stamps = -1; /* text lines start with a timestamp: -1 = decide (not when stderr is the journal) */
static int stamps_forced = -1;

static const char *const level_names[] = {
    [NLPD_LOG_ERR] = "err",   [NLPD_LOG_WARNING] = "warning", [NLPD_LOG_NOTICE] = "notice",
    [NLPD_LOG_INFO] = "info", [NLPD_LOG_DEBUG] = "debug",
};

void nlpd_log_setup(enum nlpd_log_level level, enum nlpd_log_format format)
{
    current_level = level;
    current_format = format;
    stamps = stamps_forced;
}

void nlpd_log_timestamps(int on)
{
    stamps = stamps_forced = on;
}

/* systemd sets JOURNAL_STREAM to "DEVICE:INODE" of the stream it connected to stderr: then journald stamps each
 * line itself (and reads the <N> prefix), so nlpd adds no time of its own. */
static int stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) != 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

/* ISO 8601 in UTC with milliseconds: 2026-12-07T01:20:54.123Z */
static void iso_now(char out[32])
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

int nlpd_log_level_parse(const char *name)
{
    for (int i = NLPD_LOG_ERR; i <= NLPD_LOG_DEBUG; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    if (strcmp(name, "error") == 0)
        return NLPD_LOG_ERR;
    if (strcmp(name, "warn") == 0)
        return NLPD_LOG_WARNING;
    return -1;
}

int nlpd_log_enabled(enum nlpd_log_level level)
{
    return level <= current_level;
}

static size_t json_escape_into(char *dst, size_t cap, const char *s)
{
    size_t o = 0;
    for (; *s && o + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            dst[o++] = '\\';
            dst[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(dst + o, cap - o, "\\u%04x", c);
        } else {
            dst[o++] = (char)c;
        }
    }
    dst[o] = '\0';
    return o;
}

static void emit(enum nlpd_log_level level, const char *facility, const char *msg);

/* Repeated warnings and errors (same facility and text) within REPEAT_WINDOW seconds are counted, not
 * written: one line says how many were suppressed when the text changes or the window ends. */
#define REPEAT_WINDOW 10
static pthread_mutex_t repeat_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_msg[2048], last_facility[64];
static enum nlpd_log_level last_level;
static unsigned long repeats;
static time_t window_start;

static void flush_repeats_locked(void)
{
    if (repeats) {
        char note[2200];
        snprintf(note, sizeof note, "last message repeated %lu more time%s: %.2000s", repeats, repeats == 1 ? "" : "s",
                 last_msg);
        emit(last_level, last_facility, note);
        repeats = 0;
    }
}

void(nlpd_log)(enum nlpd_log_level level, const char *facility, const char *fmt, ...)
{
    if (!nlpd_log_enabled(level))
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (level > NLPD_LOG_WARNING) {
        emit(level, facility, msg);
        return;
    }
    time_t now = time(NULL);
    pthread_mutex_lock(&repeat_lock);
    const char *fac = facility ? facility : "main";
    if (now - window_start < REPEAT_WINDOW && level == last_level && strcmp(msg, last_msg) == 0 &&
        strcmp(fac, last_facility) == 0) {
        repeats++;
        pthread_mutex_unlock(&repeat_lock);
        return;
    }
    flush_repeats_locked();
    snprintf(last_msg, sizeof last_msg, "%s", msg);
    snprintf(last_facility, sizeof last_facility, "%s", fac);
    last_level = level;
    window_start = now;
    emit(level, facility, msg);
    pthread_mutex_unlock(&repeat_lock);
}

void nlpd_log_flush(void)
{
    pthread_mutex_lock(&repeat_lock);
    flush_repeats_locked();
    pthread_mutex_unlock(&repeat_lock);
}

void nlpd_log_bare(const char *line)
{
    if (current_format == NLPD_LOG_JSON)
        return;
    char buf[512];
    int n = snprintf(buf, sizeof buf, "%s\n", line);
    if (n > 0 && (size_t)n < sizeof buf) {
        ssize_t w = write(STDERR_FILENO, buf, (size_t)n);
        (void)w;
    }
}

static void emit(enum nlpd_log_level level, const char *facility, const char *msg)
{
    char line[4608], now[32];
    int n;
    iso_now(now);
    if (current_format == NLPD_LOG_JSON) {
        char emsg[4096];
        json_escape_into(emsg, sizeof emsg, msg);
        n = snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"facility\":\"%s\",\"msg\":\"%s\"}\n", now,
                     level_names[level], facility ? facility : "nlpd", emsg);
    } else {
        if (stamps < 0)
            stamps = !stderr_is_journal();
        n = snprintf(line, sizeof line, "%s%s<%d>nlpd[%s]: %s\n", stamps ? now : "", stamps ? " " : "", (int)level,
                     facility ? facility : "main", msg);
    }
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line) {
        n = sizeof line - 1;
        line[n - 1] = '\n';
    }
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
