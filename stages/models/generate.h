/* Autoregressive search for encoder-decoder models with the semantics of transformers' generate() (v4.47):
 * greedy (num_beams 1) and beam search (BeamSearchScorer), with the logits processors a translation model's
 * generation config uses (no_repeat_ngram_size, bad_words_ids, min_length, forced_bos_token_id,
 * forced_eos_token_id). The model is
 * reached through a small step/reorder interface, so the search is independent of the kernels and testable with
 * scripted logits. Finished sentences leave the batch: the model is asked to keep only the live rows. */
#ifndef NLPD_GENERATE_H
#define NLPD_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "nlpd_error.h"

enum nlpd_early_stopping {
    NLPD_EARLY_STOP_FALSE = 0, /* stop a sentence when no beam can still beat its worst kept hypothesis */
    NLPD_EARLY_STOP_TRUE,      /* stop as soon as num_beams hypotheses are finished */
    NLPD_EARLY_STOP_NEVER,     /* the canonical beam search: bound by max_length */
};

struct nlpd_gen_params {
    int num_beams;  /* 1 = greedy */
    int max_length; /* total ids per output, decoder start token included (generate(max_length=...)) */
    float length_penalty;
    enum nlpd_early_stopping early_stopping;
    int no_repeat_ngram_size; /* 0 = off */
    int min_length;           /* eos banned while the output is shorter; 0 = off */
    int32_t decoder_start, eos, pad;
    int32_t forced_eos; /* -1 = none */
    int has_forced_bos; /* forced_bos_token_id: the id after the decoder start (M2M100/NLLB target language) */
    int32_t forced_bos;
    int renormalize_logits; /* log-softmax again after the processors (beam scores; greedy picks are the same) */
    /* bad_words_ids: n_bad sequences, sequence i = bad[bad_off[i] .. bad_off[i + 1]) */
    const int32_t *bad;
    const size_t *bad_off;
    size_t n_bad;
    /* Optional: sees each step's raw logits before any processor (tests, `nlpd infer --debug`). */
    void (*on_logits)(void *ctx, int step, const int32_t *sent, int rows, const float *logits, int vocab);
    void *on_logits_ctx;
};

/* What the search needs from the model. Rows are decoder hypotheses; sent[r] says which source sentence row r
 * belongs to (an index into the encoder batch). */
struct nlpd_gen_model {
    void *ctx;
    int vocab;
    /* Feeds tokens[r] at decoder position pos to every row and writes raw logits [rows, vocab] to logits. */
    int (*step)(void *ctx, const int32_t *tokens, const int32_t *sent, int rows, int pos, float *logits,
                struct nlpd_error *err);
    /* Optional: as step, but only each row's k best candidates come back (decoding on the device): their columns
     * (ids[r*k + j], best raw logit first, equal logits lower column first) and log-softmax over the whole row
     * (logp[r*k + j]; NaN when the row holds a non-finite logit, which is then an error). Used at the steps where
     * no logits processor needs the whole row (see generate.c), else step runs. */
    int (*step_topk)(void *ctx, const int32_t *tokens, const int32_t *sent, int rows, int pos, int k, float *logp,
                     int32_t *ids, struct nlpd_error *err);
    /* New row i continues old row idx[i] (its cached keys/values for positions 0 .. pos); rows shrink or stay. */
    int (*reorder)(void *ctx, const int32_t *idx, int rows, int pos, struct nlpd_error *err);
};

struct nlpd_gen_output {
    int32_t *ids; /* decoder start token first; ends with eos when finished; malloc'd */
    size_t n;
    float score; /* beam search: the hypothesis score (sum of log-probs / length^penalty); greedy: 0 */
};

/* Generates for sentences 0 .. n_sent-1 of the model's current encoder batch. out[n_sent] is filled (free with
 * nlpd_gen_output_free). 0 or a negative NLPD_E* code with err. */
int nlpd_generate(const struct nlpd_gen_model *m, int n_sent, const struct nlpd_gen_params *p,
                  struct nlpd_gen_output *out, struct nlpd_error *err);
void nlpd_gen_output_free(struct nlpd_gen_output *out, int n);

#endif
