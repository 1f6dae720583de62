/* `nlpd` with injected faults, for the loss-path cases of test_kafka.sh: the Makefile links it like build/nlpd but
 * with -Wl,--wrap=nlpd_offsets_add, so these wrappers stand between the daemon and the functions they wrap.
 * NLPD_FAULT_TRACK_OFFSET=N: registering the record at offset N with the offset tracker fails once, as if out of
 * memory (the record cannot be tracked).
 * NLPD_FAULT_STOP_SLEEP_S=S: stopping a pipeline first sleeps S seconds (a stage that does not come back). */
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "nlpd_error.h"
#include "offsets.h"
#include "pipeline.h"

int __real_nlpd_offsets_add(struct nlpd_tp *tp, int64_t offset);
int __wrap_nlpd_offsets_add(struct nlpd_tp *tp, int64_t offset);
void __real_nlpd_pipeline_stop(struct nlpd_pipeline *p);
void __wrap_nlpd_pipeline_stop(struct nlpd_pipeline *p);

int __wrap_nlpd_offsets_add(struct nlpd_tp *tp, int64_t offset)
{
    static int fired; /* the event-loop thread only */
    const char *at = getenv("NLPD_FAULT_TRACK_OFFSET");
    if (at && !fired && offset == strtoll(at, NULL, 10)) {
        fired = 1;
        return NLPD_ENOMEM;
    }
    return __real_nlpd_offsets_add(tp, offset);
}

void __wrap_nlpd_pipeline_stop(struct nlpd_pipeline *p)
{
    const char *s = getenv("NLPD_FAULT_STOP_SLEEP_S");
    if (s)
        sleep((unsigned)strtoul(s, NULL, 10));
    __real_nlpd_pipeline_stop(p);
}
