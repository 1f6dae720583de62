/* Pipe mode: JSON lines in, one enriched JSON line out per input line, in input order. The reader
 * only splits lines into micro-batches; workers decode, run the stages and encode; a writer thread
 * writes finished batches in order. A bad line gives {"error": ..., "line": N} and the run goes on. */
#ifndef NLPD_PIPE_H
#define NLPD_PIPE_H

#include <stdint.h>

#include "config.h"
#include "pipeline.h"

struct nlpd_pipe_stats {
    uint64_t lines, ok, errors;
    double seconds; /* wall time from the first read to the last write */
    double latency_p50_ms, latency_p99_ms, latency_max_ms;
};

/* Reads in_fd to its end, writes to out_fd. Returns 0, or 1 when a stage failed fatally or
 * the output could not be written. The pipeline's workers must be started. */
int nlpd_pipe_run(const struct nlpd_config *cfg, struct nlpd_pipeline *p, int in_fd, int out_fd,
                  struct nlpd_pipe_stats *stats);

#endif
