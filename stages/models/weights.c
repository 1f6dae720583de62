/* Two-pass weight loading into a backend buffer (see weights.h). */
#include "weights.h"

#include <stdio.h>
#include <stdlib.h>

size_t nlpd_wl_place(struct nlpd_wloader *ld, size_t count)
{
    size_t off = ld->next;
    ld->next += (count + 15) & ~(size_t)15; /* 64-byte alignment */
    return off;
}

static int reserve(struct nlpd_wloader *ld, size_t n, const char *name, struct nlpd_error *err)
{
    if (n <= ld->tmp_cap)
        return 0;
    float *t = realloc(ld->tmp, n * sizeof(float));
    if (!t)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory loading tensor \"%s\"", name);
    ld->tmp = t;
    ld->tmp_cap = n;
    return 0;
}

int nlpd_wl_put(struct nlpd_wloader *ld, const char *name, int rows, int cols, int transpose, size_t dst, size_t ldst,
                struct nlpd_error *err)
{
    int64_t shape[2] = {rows, cols};
    if (ld->planning) /* everything is checked before the weights are allocated */
        return nlpd_safetensors_read_f32(ld->st, name, cols ? 2 : 1, shape, NULL, err);
    size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
    int rc = reserve(ld, n * 2, name, err);
    if (rc || (rc = nlpd_safetensors_read_f32(ld->st, name, cols ? 2 : 1, shape, ld->tmp, err)))
        return rc;
    if (!cols)
        return nlpd_backend_upload(ld->dst, dst * sizeof(float), ld->tmp, n * sizeof(float));
    const float *src = ld->tmp;
    int out_rows = rows, out_cols = cols;
    if (transpose) {
        float *t = ld->tmp + n;
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                t[(size_t)c * rows + r] = ld->tmp[(size_t)r * cols + c];
        src = t;
        out_rows = cols;
        out_cols = rows;
    }
    /* one strided copy per tensor (a fused [q|k|v] block's rows have gaps), not one per row */
    struct nlpd_error why = {0};
    size_t w = (size_t)out_cols * sizeof(float);
    rc = nlpd_backend_upload_2d(ld->dst, dst * sizeof(float), out_rows > 1 ? ldst * sizeof(float) : w, src, w, w,
                                (size_t)out_rows, &why);
    return rc ? nlpd_error_set(err, rc, 0, "uploading tensor \"%s\" failed: %s", name, why.message) : 0;
}

int nlpd_wl_put_ln(struct nlpd_wloader *ld, const char *base, int n, size_t *g, size_t *b, struct nlpd_error *err)
{
    char wn[NLPD_WL_NAME_MAX + 16], bn[NLPD_WL_NAME_MAX + 16];
    snprintf(wn, sizeof wn, "%s.weight", base);
    snprintf(bn, sizeof bn, "%s.bias", base);
    if (!nlpd_safetensors_find(ld->st, wn)) {
        char gn[NLPD_WL_NAME_MAX + 16];
        snprintf(gn, sizeof gn, "%s.gamma", base);
        if (nlpd_safetensors_find(ld->st, gn)) {
            snprintf(wn, sizeof wn, "%s.gamma", base);
            snprintf(bn, sizeof bn, "%s.beta", base);
        }
    }
    if (ld->planning) {
        *g = nlpd_wl_place(ld, (size_t)n);
        *b = nlpd_wl_place(ld, (size_t)n);
    }
    int rc = nlpd_wl_put(ld, wn, n, 0, 0, *g, 0, err);
    return rc ? rc : nlpd_wl_put(ld, bn, n, 0, 0, *b, 0, err);
}

int nlpd_wl_put_linear(struct nlpd_wloader *ld, const char *base, int out, int in, size_t w, size_t b, size_t ld_w,
                       struct nlpd_error *err)
{
    char wn[NLPD_WL_NAME_MAX + 16], bn[NLPD_WL_NAME_MAX + 16];
    snprintf(wn, sizeof wn, "%s.weight", base);
    snprintf(bn, sizeof bn, "%s.bias", base);
    int rc = nlpd_wl_put(ld, wn, out, in, 1, w, ld_w, err);
    return rc ? rc : nlpd_wl_put(ld, bn, out, 0, 0, b, 0, err);
}

int nlpd_wl_put_host(struct nlpd_wloader *ld, const float *src, size_t n, size_t dst, struct nlpd_error *err)
{
    if (ld->planning)
        return 0;
    int rc = nlpd_backend_upload(ld->dst, dst * sizeof(float), src, n * sizeof(float));
    return rc ? nlpd_error_set(err, rc, 0, "uploading weights failed") : 0;
}

void nlpd_wl_release(struct nlpd_wloader *ld)
{
    free(ld->tmp);
    ld->tmp = NULL;
    ld->tmp_cap = 0;
}
