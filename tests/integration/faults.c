/* `nlpd` with injected faults, for the loss-path cases of test_kafka.sh: the Makefile links it like build/nlpd but
 * with -Wl,--wrap=nlpd_offsets_add, so these wrappers stand between the daemon and the functions they wrap.
 * NLPD_FAULT_TRACK_OFFSET=N: registering the record at offset N with the offset tracker fails once, as if out of
 * memory (the record cannot be tracked). */
#include <stdint.h>
#include <stdlib.h>

#include "nlpd_error.h"
#include "offsets.h"

int __real_nlpd_offsets_add(struct nlpd_tp *tp, int64_t offset);
int __wrap_nlpd_offsets_add(struct nlpd_tp *tp, int64_t offset);

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
