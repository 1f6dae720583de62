/* Logging: journald prefixes, JSON lines, and rate limiting of repeated warnings and errors. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "harness.h"
#include "log.h"

static char *capture(void (*fn)(void))
{
    char path[] = "/tmp/nlpd-test-log-XXXXXX";
    int fd = mkstemp(path), saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    fn();
    nlpd_log_flush();
    dup2(saved, STDERR_FILENO);
    close(saved);
    static char buf[65536];
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
    return buf;
}

static void repeated(void)
{
    for (int i = 0; i < 100; i++)
        nlpd_log(NLPD_LOG_WARNING, "kafka", "broker down");
    nlpd_log(NLPD_LOG_ERR, "kafka", "something else");
    for (int i = 0; i < 3; i++)
        nlpd_log(NLPD_LOG_INFO, "main", "info lines are never suppressed");
}

static void rate_limited(void)
{
    nlpd_log_setup(NLPD_LOG_INFO, NLPD_LOG_TEXT);
    const char *out = capture(repeated);
    CHECK_STR_CONTAINS(out, "<4>nlpd[kafka]: broker down\n<4>nlpd[kafka]: last message repeated 99 more times: broker down\n<3>nlpd[kafka]: something else\n");
    int info = 0;
    for (const char *p = out; (p = strstr(p, "info lines are never suppressed")); p++)
        info++;
    CHECK(info == 3);
}

static void json_lines(void)
{
    nlpd_log_setup(NLPD_LOG_INFO, NLPD_LOG_JSON);
    const char *out = capture(repeated);
    CHECK_STR_CONTAINS(out, "\"level\":\"warning\",\"facility\":\"kafka\",\"msg\":\"broker down\"");
    nlpd_log_setup(NLPD_LOG_INFO, NLPD_LOG_TEXT);
}

static int evaluated;
static const char *costly(void)
{
    evaluated++;
    return "x";
}

static void log_costly_error(void)
{
    nlpd_log(NLPD_LOG_ERR, "main", "%s", costly());
}

/* nlpd_log is a macro: below the level nothing is formatted and the arguments are not even evaluated. */
static void below_level(void)
{
    nlpd_log_setup(NLPD_LOG_INFO, NLPD_LOG_TEXT);
    evaluated = 0;
    nlpd_log(NLPD_LOG_DEBUG, "main", "%s", costly());
    CHECK(evaluated == 0);
    if (evaluated)
        nlpd_log(NLPD_LOG_DEBUG, "main", "dangling else stays with its if");
    else
        evaluated = -1;
    CHECK(evaluated == -1);
    evaluated = 0;
    CHECK_STR_CONTAINS(capture(log_costly_error), "<3>nlpd[main]: x\n");
    CHECK(evaluated == 1);
}

int main(void)
{
    RUN(below_level);
    RUN(rate_limited);
    RUN(json_lines);
    CHECK(nlpd_log_level_parse("warning") == NLPD_LOG_WARNING && nlpd_log_level_parse("loud") == -1);
    return TEST_REPORT();
}
