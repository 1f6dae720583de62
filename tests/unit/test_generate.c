/* generate.c's device-candidate path (issue 20 item 6): a scripted model whose step_topk runs the CPU backend's
 * NLPD_OP_LOG_SOFTMAX_TOPK must give the same ids and scores, to the bit, as its plain step with the host's
 * log-softmax and processors, greedy and beam, with and without the processors that keep it usable (one-token bad
 * words, min_length) and those that force the host path (n-grams, forced bos); a NaN logit through step_topk is an
 * error. The logits depend on (sentence, position, fed token) only, so reorder has nothing to move. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "generate.h"
#include "harness.h"
#include "nlpd_kernels.h"

enum { V = 300, EOS = 2, PAD = 1, NS = 3, MAXLEN = 12 };

static struct nlpd_backend *cpu;
static int last_host_steps; /* steps of the last same() whose dev run took the host path */

struct script {
    int topk_calls, step_calls;
    int nan_at; /* position whose logits hold a NaN (-1: none) */
};

static float logit(int sent, int pos, int32_t tok, int t)
{
    uint32_t h = (uint32_t)sent * 2654435761u ^ (uint32_t)pos * 40503u ^ (uint32_t)tok * 9176u ^ (uint32_t)t * 97u;
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    h ^= h >> 15;
    float v = (float)(h & 0xffff) / 65536.0f * 8.0f - 4.0f;
    if (t == EOS)
        v += 1.2f * (float)pos - 3.0f; /* sentences end after a few steps */
    return v;
}

static void fill_rows(const struct script *sc, const int32_t *tokens, const int32_t *sent, int rows, int pos,
                      float *logits)
{
    for (int r = 0; r < rows; r++)
        for (int t = 0; t < V; t++)
            logits[(size_t)r * V + t] = logit(sent[r], pos, tokens[r], t);
    if (pos == sc->nan_at)
        logits[V / 2] = NAN;
}

static int step(void *ctx, const int32_t *tokens, const int32_t *sent, int rows, int pos, float *logits,
                struct nlpd_error *err)
{
    (void)err;
    struct script *sc = ctx;
    sc->step_calls++;
    fill_rows(sc, tokens, sent, rows, pos, logits);
    return 0;
}

static int step_topk(void *ctx, const int32_t *tokens, const int32_t *sent, int rows, int pos, int k, float *logp,
                     int32_t *ids, struct nlpd_error *err)
{
    struct script *sc = ctx;
    sc->topk_calls++;
    float *x = malloc((size_t)rows * V * sizeof *x);
    if (!x)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    fill_rows(sc, tokens, sent, rows, pos, x);
    struct nlpd_op op = {.kind = NLPD_OP_LOG_SOFTMAX_TOPK};
    op.u.topk = (struct nlpd_op_log_softmax_topk){x, logp, ids, rows, V, k, V};
    int rc = nlpd_backend_run(cpu, &op, err);
    if (!rc)
        rc = nlpd_backend_sync(cpu, err);
    free(x);
    return rc;
}

static int reorder(void *ctx, const int32_t *idx, int rows, int pos, struct nlpd_error *err)
{
    (void)ctx, (void)idx, (void)rows, (void)pos, (void)err;
    return 0;
}

static const int32_t bad_pad[] = {PAD};
static const size_t bad_off[] = {0, 1};
static const int32_t bad_pair[] = {5, 6};
static const size_t bad_pair_off[] = {0, 2};

static struct nlpd_gen_params params(int beams)
{
    struct nlpd_gen_params p = {.num_beams = beams,
                                .max_length = MAXLEN,
                                .length_penalty = 1.0f,
                                .decoder_start = 0,
                                .eos = EOS,
                                .pad = PAD,
                                .forced_eos = -1};
    return p;
}

/* Runs p with and without step_topk; both outputs must agree exactly; returns how many steps used step_topk. */
static int same(const struct nlpd_gen_params *p, const char *what)
{
    struct script s1 = {.nan_at = -1}, s2 = {.nan_at = -1};
    struct nlpd_gen_model host = {.ctx = &s1, .vocab = V, .step = step, .reorder = reorder};
    struct nlpd_gen_model dev = {.ctx = &s2, .vocab = V, .step = step, .step_topk = step_topk, .reorder = reorder};
    struct nlpd_gen_output o1[NS], o2[NS];
    struct nlpd_error e1 = {0}, e2 = {0};
    CHECK(nlpd_generate(&host, NS, p, o1, &e1) == 0);
    CHECK(nlpd_generate(&dev, NS, p, o2, &e2) == 0);
    int diff = 0;
    for (int s = 0; s < NS; s++) {
        diff |= o1[s].n != o2[s].n || memcmp(o1[s].ids, o2[s].ids, o1[s].n * sizeof(int32_t)) ||
                memcmp(&o1[s].score, &o2[s].score, sizeof(float));
        if (diff)
            fprintf(stderr, "  %s: sentence %d differs (%zu vs %zu ids, score %.9g vs %.9g)\n", what, s, o1[s].n,
                    o2[s].n, o1[s].score, o2[s].score);
    }
    CHECK(!diff);
    CHECK(s1.topk_calls == 0);
    last_host_steps = s2.step_calls;
    printf("  %-28s %zu/%zu/%zu ids, step_topk %d of %d steps\n", what, o1[0].n, o1[1].n, o1[2].n, s2.topk_calls,
           s2.topk_calls + s2.step_calls);
    nlpd_gen_output_free(o1, NS);
    nlpd_gen_output_free(o2, NS);
    return s2.topk_calls;
}

static void test_same_results(void)
{
    for (int beams = 1; beams <= 4; beams += 3) {
        char what[64];
        struct nlpd_gen_params p = params(beams);
        snprintf(what, sizeof what, "beams %d plain", beams);
        CHECK(same(&p, what) > 0);
        p.bad = bad_pad; /* Marian's [[pad]] */
        p.bad_off = bad_off;
        p.n_bad = 1;
        p.min_length = 8; /* later than eos would come: the ban acts */
        snprintf(what, sizeof what, "beams %d bad [[pad]] min 8", beams);
        CHECK(same(&p, what) > 0);
        p.bad = bad_pair; /* a two-token bad word: the host path, every step */
        p.bad_off = bad_pair_off;
        snprintf(what, sizeof what, "beams %d bad [[5, 6]]", beams);
        CHECK(same(&p, what) == 0);
        p = params(beams);
        p.no_repeat_ngram_size = 3; /* the host from step 2 on, where a 3-gram can repeat */
        snprintf(what, sizeof what, "beams %d ngram 3", beams);
        CHECK(same(&p, what) == 1);
        p = params(beams);
        p.has_forced_bos = 1; /* the host at step 1 (forced bos) and at the last step (forced eos) */
        p.forced_bos = 7;
        p.forced_eos = EOS;
        snprintf(what, sizeof what, "beams %d forced bos/eos", beams);
        CHECK(same(&p, what) > 0);
        CHECK(last_host_steps == 1 || last_host_steps == 2); /* step 1, and the last if it is reached */
    }
}

static void test_nan_is_error(void)
{
    for (int beams = 1; beams <= 4; beams += 3) {
        struct script sc = {.nan_at = 2};
        struct nlpd_gen_model dev = {.ctx = &sc, .vocab = V, .step = step, .step_topk = step_topk, .reorder = reorder};
        struct nlpd_gen_params p = params(beams);
        struct nlpd_gen_output o[NS];
        struct nlpd_error err = {0};
        CHECK(nlpd_generate(&dev, NS, &p, o, &err) == NLPD_ERANGE);
        CHECK_STR_CONTAINS(err.message, "non-finite logits in decoder row 0");
    }
}

int main(void)
{
    struct nlpd_error err = {0};
    cpu = nlpd_backend_new("cpu", 1, &err);
    CHECK(cpu != NULL);
    if (!cpu)
        return TEST_REPORT();
    RUN(test_same_results);
    RUN(test_nan_is_error);
    nlpd_backend_free(cpu);
    return TEST_REPORT();
}
