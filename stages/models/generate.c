/* Greedy and beam search with transformers' generate() semantics (see generate.h). Scores are float32 like
 * transformers'; the log-softmax sums in double. Beam ties (equal candidate scores) go to the lower flat index
 * beam * vocab + token. */
#include "generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nlpd_kernels.h"

#define BEAM_INIT_OTHER (-1e9f) /* transformers starts beams 1.. at -1e9 so the first step expands beam 0 only */

void nlpd_gen_output_free(struct nlpd_gen_output *out, int n)
{
    if (!out)
        return;
    for (int i = 0; i < n; i++) {
        free(out[i].ids);
        out[i].ids = NULL;
        out[i].n = 0;
    }
}

static int oom(struct nlpd_error *err)
{
    return nlpd_error_set(err, NLPD_ENOMEM, 0, "generate: out of memory");
}

/* ---------------------------------------------------------------- logits processors ---- */

/* In transformers' order: no-repeat n-grams, bad words, min length, forced bos, forced eos. hist[0..len) is the
 * row's ids so far (decoder start first); the row's scores are changed in place. */
static void process_row(const struct nlpd_gen_params *p, const int32_t *hist, int len, float *row, int V,
                        float forced_value)
{
    const float ninf = -INFINITY;
    int n = p->no_repeat_ngram_size;
    if (n > 0 && len + 1 >= n) {
        const int32_t *prefix = hist + len - (n - 1);
        for (int i = 0; i + n <= len; i++)
            if (!memcmp(hist + i, prefix, (size_t)(n - 1) * sizeof *hist)) {
                int32_t t = hist[i + n - 1];
                if (t >= 0 && t < V)
                    row[t] = ninf;
            }
    }
    for (size_t b = 0; b < p->n_bad; b++) {
        const int32_t *seq = p->bad + p->bad_off[b];
        size_t k = p->bad_off[b + 1] - p->bad_off[b];
        if (k == 0 || (k == 1 && seq[0] == p->eos)) /* transformers drops [eos] from bad_words_ids */
            continue;
        int32_t last = seq[k - 1];
        if (last < 0 || last >= V)
            continue;
        if (k == 1 || ((int)k - 1 <= len && !memcmp(hist + len - (k - 1), seq, (k - 1) * sizeof *seq)))
            row[last] = ninf;
    }
    if (p->min_length > 0 && len < p->min_length && p->eos >= 0 && p->eos < V)
        row[p->eos] = ninf;
    if (p->has_forced_bos && len == 1 && p->forced_bos >= 0 && p->forced_bos < V) {
        for (int i = 0; i < V; i++)
            row[i] = ninf;
        row[p->forced_bos] = forced_value;
    }
    if (p->forced_eos >= 0 && p->forced_eos < V && len == p->max_length - 1) {
        for (int i = 0; i < V; i++)
            row[i] = ninf;
        row[p->forced_eos] = forced_value;
    }
}

/* ------------------------------------------------------------------ candidates from the device ---- */

/* Whether step len can use the model's step_topk, and with which bans: when the only processors acting are
 * single-token bans (one-token bad words, eos under min_length), the row's best `need` survivors are among its
 * best need + nban raw logits and their log-probabilities are the unprocessed ones. Returns nban (the banned ids in
 * ban[0..nban)), or -1 when a processor needs the whole row (n-grams, longer bad words, forced tokens,
 * renormalisation after a ban, on_logits) or k would exceed NLPD_TOPK_MAX or leave fewer than need unbanned. */
static int topk_plan(const struct nlpd_gen_model *m, const struct nlpd_gen_params *p, int len, int need, int32_t *ban)
{
    if (!m->step_topk || p->on_logits || (p->no_repeat_ngram_size > 0 && len + 1 >= p->no_repeat_ngram_size) ||
        (p->has_forced_bos && len == 1) || (p->forced_eos >= 0 && len == p->max_length - 1))
        return -1;
    int nban = 0;
    for (size_t b = 0; b < p->n_bad; b++) {
        const int32_t *seq = p->bad + p->bad_off[b];
        size_t k = p->bad_off[b + 1] - p->bad_off[b];
        if (k == 0 || (k == 1 && seq[0] == p->eos))
            continue;
        if (k > 1 || nban == NLPD_TOPK_MAX)
            return -1;
        if (seq[0] >= 0 && seq[0] < m->vocab)
            ban[nban++] = seq[0];
    }
    if (p->min_length > 0 && len < p->min_length && p->eos >= 0 && p->eos < m->vocab && nban < NLPD_TOPK_MAX)
        ban[nban++] = p->eos;
    if (nban && p->renormalize_logits)
        return -1;
    return need + nban <= NLPD_TOPK_MAX && need + nban <= m->vocab ? nban : -1;
}

static int banned(const int32_t *ban, int nban, int32_t t)
{
    for (int i = 0; i < nban; i++)
        if (ban[i] == t)
            return 1;
    return 0;
}

/* step_topk's log-probabilities: a NaN (a non-finite logit in the row, fp16 overflow) is an error, never a pick */
static int topk_check(const float *logp, int rows, int k, struct nlpd_error *err)
{
    for (int i = 0; i < rows * k; i++)
        if (!isfinite(logp[i]))
            return nlpd_error_set(err, NLPD_ERANGE, 0,
                                  "generate: non-finite logits in decoder row %d (an overflow in the decoder's forward "
                                  "pass)",
                                  i / k);
    return 0;
}

/* ------------------------------------------------------------------------------ greedy ---- */

static int argmax(const float *x, int V)
{
    int best = 0;
    for (int i = 1; i < V; i++)
        if (x[i] > x[best] || (isnan(x[best]) && !isnan(x[i])))
            best = i;
    return best;
}

static int greedy(const struct nlpd_gen_model *m, int n_sent, const struct nlpd_gen_params *p,
                  struct nlpd_gen_output *out, struct nlpd_error *err)
{
    const int V = m->vocab, L = p->max_length;
    int rc = 0, R = n_sent;
    int32_t *sent = malloc((size_t)n_sent * sizeof *sent), *tok = malloc((size_t)n_sent * sizeof *tok);
    int32_t *keep = malloc((size_t)n_sent * sizeof *keep);
    float *logits = malloc((size_t)n_sent * V * sizeof *logits);
    float *logp = malloc((size_t)n_sent * NLPD_TOPK_MAX * sizeof *logp);
    int32_t *cids = malloc((size_t)n_sent * NLPD_TOPK_MAX * sizeof *cids), ban[NLPD_TOPK_MAX];
    if (!sent || !tok || !keep || !logits || !logp || !cids) {
        rc = oom(err);
        goto done;
    }
    for (int s = 0; s < n_sent; s++) {
        if (!(out[s].ids = malloc((size_t)L * sizeof(int32_t)))) {
            rc = oom(err);
            goto done;
        }
        out[s].ids[0] = p->decoder_start;
        out[s].n = 1;
        out[s].score = 0;
        sent[s] = s;
    }
    for (int len = 1; len < L && R > 0; len++) {
        for (int r = 0; r < R; r++)
            tok[r] = out[sent[r]].ids[len - 1];
        const int nban = topk_plan(m, p, len, 1, ban), kk = 1 + nban;
        if (nban >= 0) {
            if ((rc = m->step_topk(m->ctx, tok, sent, R, len - 1, kk, logp, cids, err)) ||
                (rc = topk_check(logp, R, kk, err)))
                goto done;
        } else if ((rc = m->step(m->ctx, tok, sent, R, len - 1, logits, err))) {
            goto done;
        }
        if (nban < 0 && p->on_logits)
            p->on_logits(p->on_logits_ctx, len - 1, sent, R, logits, V);
        int alive = 0;
        for (int r = 0; r < R; r++) {
            struct nlpd_gen_output *o = &out[sent[r]];
            int32_t t;
            if (nban >= 0) { /* the best unbanned candidate: the processors' argmax */
                int j = 0;
                while (j < kk - 1 && banned(ban, nban, cids[(size_t)r * kk + j]))
                    j++;
                t = cids[(size_t)r * kk + j];
            } else {
                float *row = logits + (size_t)r * V;
                process_row(p, o->ids, (int)o->n, row, V, 0.0f);
                t = argmax(row, V);
            }
            o->ids[o->n++] = t;
            if (t != p->eos)
                keep[alive++] = r;
        }
        if (alive < R && alive > 0 && len + 1 < L) {
            if ((rc = m->reorder(m->ctx, keep, alive, len - 1, err)))
                goto done;
        }
        for (int i = 0; i < alive; i++)
            sent[i] = sent[keep[i]];
        R = alive;
    }
done:
    free(sent);
    free(tok);
    free(keep);
    free(logits);
    free(logp);
    free(cids);
    return rc;
}

/* ------------------------------------------------------------------------- beam search ---- */

struct hyp {
    double score; /* transformers keeps these as Python floats (double) */
    int32_t *ids;
    int n;
};

/* BeamHypotheses: at most K finished hypotheses, the worst one evicted (its score is then the new bar). */
struct sent_beams {
    struct hyp *hyps;
    int nhyps;
    double worst;
    int done;
};

static int hyps_add(struct sent_beams *sb, int K, const int32_t *ids, int n, float sum_logprobs, int gen_len, float lp)
{
    double score = (double)sum_logprobs / pow((double)gen_len, (double)lp);
    if (!(sb->nhyps < K || score > sb->worst))
        return 0;
    int32_t *copy = malloc((size_t)(n + 1) * sizeof *copy);
    if (!copy)
        return NLPD_ENOMEM;
    memcpy(copy, ids, (size_t)n * sizeof *copy);
    sb->hyps[sb->nhyps++] = (struct hyp){score, copy, n};
    if (sb->nhyps > K) {
        /* evict the lowest score (the earliest among equals), the next lowest becomes the bar */
        int lo = 0;
        for (int i = 1; i < sb->nhyps; i++)
            if (sb->hyps[i].score < sb->hyps[lo].score)
                lo = i;
        free(sb->hyps[lo].ids);
        memmove(sb->hyps + lo, sb->hyps + lo + 1, (size_t)(sb->nhyps - lo - 1) * sizeof *sb->hyps);
        sb->nhyps--;
        double w = INFINITY;
        for (int i = 0; i < sb->nhyps; i++)
            w = sb->hyps[i].score < w ? sb->hyps[i].score : w;
        sb->worst = w;
    } else {
        sb->worst = score < sb->worst ? score : sb->worst;
    }
    return 0;
}

/* BeamHypotheses.is_done; cur_len counts the ids the candidates' scores were computed on (start included). */
static int hyps_is_done(const struct sent_beams *sb, const struct nlpd_gen_params *p, float best, int cur_len)
{
    const int K = p->num_beams;
    if (sb->nhyps < K)
        return 0;
    if (p->early_stopping == NLPD_EARLY_STOP_TRUE)
        return 1;
    double highest;
    if (p->early_stopping == NLPD_EARLY_STOP_NEVER && p->length_penalty > 0.0f)
        highest = (double)best / pow((double)(p->max_length - 1), (double)p->length_penalty);
    else
        highest = (double)best / pow((double)(cur_len - 1), (double)p->length_penalty);
    return sb->worst >= highest;
}

struct cand {
    float score;
    int32_t token;
    int32_t beam; /* beam within the sentence */
};

/* a before b: higher score, then lower flat index */
static int cand_better(const struct cand *a, const struct cand *b, int V)
{
    if (a->score != b->score)
        return a->score > b->score;
    return (long long)a->beam * V + a->token < (long long)b->beam * V + b->token;
}

/* Inserts c into the sorted list top[0..*n) of capacity k. */
static void top_insert(struct cand *top, int *n, int k, struct cand c, int V)
{
    if (*n == k && !cand_better(&c, &top[k - 1], V))
        return;
    int i = *n < k ? (*n)++ : k - 1;
    while (i > 0 && cand_better(&c, &top[i - 1], V)) {
        top[i] = top[i - 1];
        i--;
    }
    top[i] = c;
}

static int beam_search(const struct nlpd_gen_model *m, int n_sent, const struct nlpd_gen_params *p,
                       struct nlpd_gen_output *out, struct nlpd_error *err)
{
    const int V = m->vocab, K = p->num_beams, L = p->max_length, NC = 2 * K;
    const size_t rows_max = (size_t)n_sent * K;
    int rc = 0;
    struct sent_beams *sb = calloc((size_t)n_sent, sizeof *sb);
    int32_t *live = malloc((size_t)n_sent * sizeof *live); /* live sentence list */
    int32_t *sent = malloc(rows_max * sizeof *sent);       /* row -> sentence */
    int32_t *tok = malloc(rows_max * sizeof *tok), *idx = malloc(rows_max * sizeof *idx);
    float *bscore = malloc(rows_max * sizeof *bscore), *nscore = malloc(rows_max * sizeof *nscore);
    int32_t *hist = malloc(rows_max * (size_t)L * sizeof *hist), *nhist = malloc(rows_max * (size_t)L * sizeof *nhist);
    float *logits = malloc(rows_max * (size_t)V * sizeof *logits);
    struct cand *top = malloc((size_t)n_sent * NC * sizeof *top), *rowtop = malloc((size_t)NC * sizeof *rowtop);
    float *logp = malloc(rows_max * NLPD_TOPK_MAX * sizeof *logp);
    int32_t *cids = malloc(rows_max * NLPD_TOPK_MAX * sizeof *cids), ban[NLPD_TOPK_MAX];
    if (!sb || !live || !sent || !tok || !idx || !bscore || !nscore || !hist || !nhist || !logits || !top || !rowtop ||
        !logp || !cids) {
        rc = oom(err);
        goto done;
    }
    for (int s = 0; s < n_sent; s++) {
        if (!(sb[s].hyps = calloc((size_t)K + 1, sizeof *sb[s].hyps))) {
            rc = oom(err);
            goto done;
        }
        sb[s].worst = 1e9;
        live[s] = s;
        for (int k = 0; k < K; k++) {
            size_t r = (size_t)s * K + k;
            sent[r] = s;
            bscore[r] = k ? BEAM_INIT_OTHER : 0.0f;
            hist[r * L] = p->decoder_start;
        }
    }
    int nlive = n_sent, len = 1;
    while (nlive > 0 && len < L) {
        const int R = nlive * K;
        for (int r = 0; r < R; r++)
            tok[r] = hist[(size_t)r * L + len - 1];
        const int nban = topk_plan(m, p, len, NC, ban), kk = NC + nban;
        if (nban >= 0) {
            if ((rc = m->step_topk(m->ctx, tok, sent, R, len - 1, kk, logp, cids, err)) ||
                (rc = topk_check(logp, R, kk, err)))
                goto done;
        } else if ((rc = m->step(m->ctx, tok, sent, R, len - 1, logits, err))) {
            goto done;
        }
        if (nban < 0 && p->on_logits)
            p->on_logits(p->on_logits_ctx, len - 1, sent, R, logits, V);
        /* per row: log-softmax, processors, + beam score; the row's best 2K; then per sentence the best 2K.
         * The log-softmax is a shift by the row's log-sum-exp (taken before the processors, as transformers
         * does), so candidates are picked on the raw logits and only they are shifted. */
        for (int li = 0; li < nlive; li++) {
            int nt = 0;
            for (int k = 0; k < K && nban >= 0; k++) { /* the device's candidates: already log-probabilities */
                int r = li * K + k, nr = 0;
                for (int j = 0; j < kk && nr < NC; j++)
                    if (!banned(ban, nban, cids[(size_t)r * kk + j]))
                        rowtop[nr++] = (struct cand){logp[(size_t)r * kk + j], cids[(size_t)r * kk + j], k};
                for (int i = 0; i < nr; i++) {
                    struct cand c = rowtop[i];
                    c.score = c.score + bscore[r];
                    top_insert(top + (size_t)li * NC, &nt, NC, c, V);
                }
            }
            for (int k = 0; k < K && nban < 0; k++) {
                int r = li * K + k, nr = 0;
                float *row = logits + (size_t)r * V;
                for (int t = 0; t < V; t++)
                    if (row[t] != row[t])
                        row[t] = -INFINITY; /* NaN */
                float lse = p->renormalize_logits ? 0.0f : nlpd_kernels_logsumexp(row, V);
                process_row(p, hist + (size_t)r * L, len, row, V, lse); /* forced eos: log-prob 0 */
                if (p->renormalize_logits && !(p->forced_eos >= 0 && len == p->max_length - 1) &&
                    !(p->has_forced_bos && len == 1))
                    lse = nlpd_kernels_logsumexp(row, V); /* LogitNormalization: over what the processors left */
                for (int t = 0; t < V; t++)
                    if (nr < NC || row[t] >= rowtop[NC - 1].score)
                        top_insert(rowtop, &nr, NC, (struct cand){row[t], t, k}, V);
                for (int i = 0; i < nr; i++) {
                    struct cand c = rowtop[i];
                    c.score = (c.score - lse) + bscore[r];
                    top_insert(top + (size_t)li * NC, &nt, NC, c, V);
                }
            }
        }
        /* BeamSearchScorer.process */
        int nlive2 = 0, R2 = 0;
        const int cur_len = len + 1;
        for (int li = 0; li < nlive; li++) {
            const int s = live[li];
            const struct cand *c = top + (size_t)li * NC;
            int kept = 0;
            for (int rank = 0; rank < NC && kept < K; rank++) {
                int src = li * K + c[rank].beam;
                if (c[rank].token == p->eos) {
                    if (rank >= K)
                        continue;
                    if ((rc = hyps_add(&sb[s], K, hist + (size_t)src * L, len, c[rank].score, cur_len - 1,
                                       p->length_penalty)))
                        goto oom;
                } else {
                    idx[R2 + kept] = src;
                    tok[R2 + kept] = c[rank].token;
                    nscore[R2 + kept] = c[rank].score;
                    kept++;
                }
            }
            sb[s].done = hyps_is_done(&sb[s], p, c[0].score, cur_len);
            if (sb[s].done)
                continue;
            live[nlive2++] = s;
            for (int k = 0; k < K; k++) {
                int r = R2 + k;
                memcpy(nhist + (size_t)r * L, hist + (size_t)idx[r] * L, (size_t)len * sizeof *hist);
                nhist[(size_t)r * L + len] = tok[r];
                bscore[r] = nscore[r];
                sent[r] = s;
            }
            R2 += K;
        }
        int32_t *t = hist;
        hist = nhist;
        nhist = t;
        nlive = nlive2;
        len++;
        if (nlive > 0 && len < L && (rc = m->reorder(m->ctx, idx, R2, len - 2, err)))
            goto done;
    }
    /* BeamSearchScorer.finalize: sentences still searching keep their beams as hypotheses */
    for (int li = 0; li < nlive; li++) {
        const int s = live[li];
        for (int k = 0; k < K; k++) {
            int r = li * K + k;
            if ((rc = hyps_add(&sb[s], K, hist + (size_t)r * L, len, bscore[r], len - 1, p->length_penalty)))
                goto oom;
        }
    }
    for (int s = 0; s < n_sent; s++) {
        /* sorted by score, the last one (the latest added among equals) wins */
        int best = -1;
        for (int i = 0; i < sb[s].nhyps; i++)
            if (best < 0 || sb[s].hyps[i].score >= sb[s].hyps[best].score)
                best = i;
        if (best < 0) { /* cannot happen with K >= 1; defensive */
            rc = nlpd_error_set(err, NLPD_EFATAL, 0, "generate: no hypothesis for sentence %d", s);
            goto done;
        }
        struct hyp *h = &sb[s].hyps[best];
        out[s].ids = h->ids;
        out[s].n = (size_t)h->n;
        out[s].score = (float)h->score;
        if (h->n < L) /* finished by eos: transformers writes the eos after the hypothesis */
            out[s].ids[out[s].n++] = p->eos;
        h->ids = NULL;
    }
    goto done;
oom:
    rc = oom(err);
done:
    if (sb)
        for (int s = 0; s < n_sent; s++) {
            for (int i = 0; sb[s].hyps && i < sb[s].nhyps; i++)
                free(sb[s].hyps[i].ids);
            free(sb[s].hyps);
        }
    free(sb);
    free(live);
    free(sent);
    free(tok);
    free(idx);
    free(bscore);
    free(nscore);
    free(hist);
    free(nhist);
    free(logits);
    free(top);
    free(rowtop);
    free(logp);
    free(cids);
    return rc;
}

int nlpd_generate(const struct nlpd_gen_model *m, int n_sent, const struct nlpd_gen_params *p,
                  struct nlpd_gen_output *out, struct nlpd_error *err)
{
    for (int s = 0; s < n_sent; s++)
        out[s] = (struct nlpd_gen_output){0};
    if (n_sent <= 0)
        return 0;
    if (p->num_beams < 1 || p->num_beams > 64)
        return nlpd_error_set(err, NLPD_ERANGE, 0, "num_beams %d out of range (1 .. 64)", p->num_beams);
    if (p->max_length < 2)
        return nlpd_error_set(err, NLPD_ERANGE, 0, "max_length %d must be at least 2", p->max_length);
    if (m->vocab < 2 * p->num_beams)
        return nlpd_error_set(err, NLPD_ERANGE, 0, "vocabulary of %d is too small for %d beams", m->vocab,
                              p->num_beams);
    int rc = p->num_beams == 1 ? greedy(m, n_sent, p, out, err) : beam_search(m, n_sent, p, out, err);
    if (rc)
        nlpd_gen_output_free(out, n_sent);
    return rc;
}
