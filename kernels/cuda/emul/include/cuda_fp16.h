/* Host emulator: __half with round-to-nearest-even conversions (the device's __float2half_rn). */
#ifndef NLPD_CU_EMUL_FP16_H
#define NLPD_CU_EMUL_FP16_H

#include <stdint.h>
#include <string.h>

struct __half {
    uint16_t bits;
    __half() = default;
    __half(float f);
    operator float() const;
};

static inline uint16_t cu_emul_f32_to_f16_bits(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf or NaN */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
    if (ax >= 0x477ff000u) /* rounds to >= 65520: inf */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* subnormal half (or zero): units of 2^-24 */
        float a;
        memcpy(&a, &ax, 4);
        float q = a * 16777216.0f; /* exact scaling */
        uint32_t n = (uint32_t)q;
        float frac = q - (float)n;
        if (frac > 0.5f || (frac == 0.5f && (n & 1)))
            n++;
        return (uint16_t)(sign | n);
    }
    uint32_t e = ((ax >> 23) - 127 + 15) << 10, m = ax & 0x7fffffu;
    uint32_t h = e | (m >> 13), rest = m & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1)))
        h++;
    return (uint16_t)(sign | h);
}

static inline float cu_emul_f16_bits_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ffu, x;
    if (e == 0) {
        float f = (float)m / 16777216.0f;
        memcpy(&x, &f, 4);
        x |= sign;
    } else if (e == 31) {
        x = sign | 0x7f800000u | (m << 13);
    } else {
        x = sign | ((e - 15 + 127) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

inline __half::__half(float f) : bits(cu_emul_f32_to_f16_bits(f))
{
}
inline __half::operator float() const
{
    return cu_emul_f16_bits_to_f32(bits);
}

static inline __half __float2half_rn(float f)
{
    return __half(f);
}
static inline __half __float2half(float f)
{
    return __half(f);
}
static inline float __half2float(__half h)
{
    return (float)h;
}
static inline __half __ushort_as_half(unsigned short b)
{
    __half h;
    h.bits = b;
    return h;
}
static inline unsigned short __half_as_ushort(__half h)
{
    return h.bits;
}

#endif
