/* Loading safetensors weights into one backend buffer, in two passes over the same calls: the planning pass
 * checks every tensor's presence and shape and assigns float offsets (64-byte aligned), the second pass reads,
 * converts (F16/BF16 -> F32), optionally transposes (Linear [out, in] -> [in, out]) and uploads. Shared by the
 * encoder and seq2seq models. */
#ifndef NLPD_WEIGHTS_H
#define NLPD_WEIGHTS_H

#include <stddef.h>

#include "nlpd_error.h"
#include "nlpd_kernels.h"
#include "safetensors.h"

#define NLPD_WL_NAME_MAX 256

struct nlpd_wloader {
    struct nlpd_safetensors *st;
    struct nlpd_buffer *dst; /* the weights buffer, allocated between the passes */
    size_t next;             /* planning: next free float offset = floats needed */
    int planning;            /* 1: pass 1 (offsets + checks), 0: pass 2 (read + upload) */
    float *tmp;
    size_t tmp_cap;
};

size_t nlpd_wl_place(struct nlpd_wloader *ld, size_t count);
/* Tensor `name` of shape [rows, cols] (cols 0: a vector of rows) stored at float offset dst with row stride ldst;
 * transpose stores it as [cols, rows]. */
int nlpd_wl_put(struct nlpd_wloader *ld, const char *name, int rows, int cols, int transpose, size_t dst, size_t ldst,
                struct nlpd_error *err);
/* base.weight / base.bias (or the older base.gamma / base.beta) of a LayerNorm of n; places them when planning. */
int nlpd_wl_put_ln(struct nlpd_wloader *ld, const char *base, int n, size_t *g, size_t *b, struct nlpd_error *err);
/* A Linear [out, in] stored as [in, out] at w with row stride ld_w, and its bias at b (already placed). */
int nlpd_wl_put_linear(struct nlpd_wloader *ld, const char *base, int out, int in, size_t w, size_t b, size_t ld_w,
                       struct nlpd_error *err);
/* Uploads n floats from host memory (pass 2 only; a no-op when planning). */
int nlpd_wl_put_host(struct nlpd_wloader *ld, const float *src, size_t n, size_t dst, struct nlpd_error *err);
void nlpd_wl_release(struct nlpd_wloader *ld); /* frees the scratch (not the safetensors handle) */

#endif
