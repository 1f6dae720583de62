/* Backend selection and the thin wrappers over the backend vtable (nlpd_kernels.h), plus the load-time
 * F16/BF16 -> F32 conversions. Only the CPU backend exists in this build; "auto" falls back to it. */
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_ops.h"
#include "nlpd_kernels.h"

struct nlpd_backend *nlpd_backend_new(const char *name, int threads, struct nlpd_error *err)
{
    if (!name || !strcmp(name, "auto") || !strcmp(name, "cpu"))
        return nlpd_backend_cpu_new(threads, err);
    if (!strcmp(name, "cuda")) {
        nlpd_error_set(err, NLPD_ENOTFOUND, 0, "kernels backend \"cuda\" is not part of this build");
        return NULL;
    }
    nlpd_error_set(err, NLPD_EINVAL, 0, "unknown kernels backend \"%s\" (auto, cpu, cuda)", name);
    return NULL;
}

void nlpd_backend_free(struct nlpd_backend *be)
{
    if (be)
        be->ops->destroy(be);
}

int nlpd_backend_alloc(struct nlpd_backend *be, size_t size, struct nlpd_buffer *out, struct nlpd_error *err)
{
    memset(out, 0, sizeof *out);
    return be->ops->alloc(be, size, out, err);
}

int nlpd_backend_upload(struct nlpd_buffer *buf, size_t offset, const void *src, size_t n)
{
    return buf->backend->ops->upload(buf->backend, buf, offset, src, n);
}

int nlpd_backend_download(const struct nlpd_buffer *buf, size_t offset, void *dst, size_t n)
{
    return buf->backend->ops->download(buf->backend, buf, offset, dst, n);
}

int nlpd_backend_run(struct nlpd_backend *be, const struct nlpd_op *op, struct nlpd_error *err)
{
    if (!be->ops->supports(be, op->kind))
        return nlpd_error_set(err, NLPD_EINVAL, 0, "backend %s does not support op %d", be->ops->name, (int)op->kind);
    return be->ops->run(be, op, err);
}

int nlpd_backend_sync(struct nlpd_backend *be, struct nlpd_error *err)
{
    return be->ops->sync(be, err);
}

void nlpd_backend_buffer_free(struct nlpd_buffer *buf)
{
    if (buf && buf->backend && buf->ptr)
        buf->backend->ops->free(buf->backend, buf);
}

const char *nlpd_backend_name(const struct nlpd_backend *be)
{
    return be->ops->name;
}

int nlpd_backend_threads(const struct nlpd_backend *be)
{
    if (!strcmp(be->ops->name, "cpu"))
        return nlpd_backend_cpu_threads(be);
    return 1;
}

/* ---- dtype conversion ---- */

float nlpd_kernels_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13); /* inf / nan */
    } else if (exp) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man) {
        /* subnormal: normalise */
        int e = -1;
        do {
            e++;
            man <<= 1;
        } while (!(man & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    } else {
        bits = sign;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float nlpd_kernels_bf16_to_f32(uint16_t b)
{
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t nlpd_kernels_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40); /* quiet nan */
    x += 0x7fffu + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

uint16_t nlpd_kernels_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u)
        return sign | 0x7e00;
    if (ax >= 0x477ff000u) /* rounds to >= 65520: inf */
        return sign | 0x7c00;
    if (ax < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        if (ax < 0x33000000u)
            return sign;
        uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14 .. 24 */
        uint32_t half = m >> shift, rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return sign | (uint16_t)half;
    }
    uint32_t r = ax + 0xfffu + ((ax >> 13) & 1);
    return sign | (uint16_t)((r - 0x38000000u) >> 13);
}

static uint16_t load_u16le(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

void nlpd_kernels_convert_f16(float *dst, const void *src, size_t n)
{
    const unsigned char *p = src;
    for (size_t i = 0; i < n; i++)
        dst[i] = nlpd_kernels_f16_to_f32(load_u16le(p + 2 * i));
}

void nlpd_kernels_convert_bf16(float *dst, const void *src, size_t n)
{
    const unsigned char *p = src;
    for (size_t i = 0; i < n; i++)
        dst[i] = nlpd_kernels_bf16_to_f32(load_u16le(p + 2 * i));
}

void nlpd_kernels_convert_f32(float *dst, const void *src, size_t n)
{
    memcpy(dst, src, n * sizeof(float)); /* little-endian hosts only (x86-64, aarch64) */
}
