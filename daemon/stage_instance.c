/* What a stage instance reports through the framework: log lines and record failures tagged with the
 * instance's configured name, so that no stage spells its own (see nlpd_stage.h). */
#include <stdarg.h>
#include <stdio.h>

#include "nlpd_stage.h"
#include "record.h"

void nlpd_stage_fail(const struct nlpd_stage_instance *inst, struct nlpd_record *rec, const char *fmt, ...)
{
    if (rec->error)
        return; /* the first reason is the one that matters */
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    nlpd_record_fail(rec, inst->name, "%s", msg);
}

void nlpd_stage_log(const struct nlpd_stage_instance *inst, enum nlpd_log_level level, const char *fmt, ...)
{
    if (!nlpd_log_enabled(level))
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    nlpd_log(level, inst->name, "%s", msg);
}
