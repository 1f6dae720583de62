/* Logger shared by the daemon and the stages (see log.h). One write() per line keeps lines whole
 * when threads log at the same time. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum nlpd_log_level current_level = NLPD_LOG_INFO;
static enum nlpd_log_format current_format = NLPD_LOG_TEXT;

static const char *const level_names[] = {
    [NLPD_LOG_ERR] = "err", [NLPD_LOG_WARNING] = "warning", [NLPD_LOG_NOTICE] = "notice",
    [NLPD_LOG_INFO] = "info", [NLPD_LOG_DEBUG] = "debug",
};

void nlpd_log_setup(enum nlpd_log_level level, enum nlpd_log_format format)
{
    current_level = level;
    current_format = format;
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

void nlpd_log(enum nlpd_log_level level, const char *facility, const char *fmt, ...)
{
    if (!nlpd_log_enabled(level))
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    char line[4608];
    int n;
    if (current_format == NLPD_LOG_JSON) {
        char emsg[4096];
        json_escape_into(emsg, sizeof emsg, msg);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        n = snprintf(line, sizeof line, "{\"ts\":%lld.%03ld,\"level\":\"%s\",\"facility\":\"%s\",\"msg\":\"%s\"}\n",
                     (long long)ts.tv_sec, ts.tv_nsec / 1000000, level_names[level], facility ? facility : "nlpd",
                     emsg);
    } else {
        n = snprintf(line, sizeof line, "<%d>nlpd[%s]: %s\n", (int)level, facility ? facility : "main", msg);
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
