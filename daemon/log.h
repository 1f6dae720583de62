/* Logging: journald priority prefixes on stderr ("<6>"), or JSON lines; level checked before formatting. Text
 * lines start with an ISO 8601 UTC timestamp ("2026-12-07T01:20:54.123Z <6>nlpd[kafka]: ...") unless stderr is the
 * journal (JOURNAL_STREAM), which stamps lines itself; JSON lines carry "ts" in the same format. */
#ifndef NLPD_LOG_H
#define NLPD_LOG_H

#include "nlpd_stage.h"

enum nlpd_log_format { NLPD_LOG_TEXT, NLPD_LOG_JSON };

void nlpd_log_setup(enum nlpd_log_level level, enum nlpd_log_format format);
/* Text lines' timestamps: 1 on, 0 off, -1 (the default) on unless stderr is the journal. */
void nlpd_log_timestamps(int on);
/* Writes the count of suppressed repeats, if any (at exit; repeated warnings and errors within 10 s are
 * counted rather than written line by line). */
void nlpd_log_flush(void);
/* Writes line alone on a line of stderr, without prefix, in text format (a value for scripts to pick up, e.g. the
 * embedded broker's address); nothing in JSON format, whose lines must stay objects (put it in a message there). */
void nlpd_log_bare(const char *line);
/* Parses "err", "warning", "notice", "info", "debug"; returns -1 when unknown. */
int nlpd_log_level_parse(const char *name);

#endif
