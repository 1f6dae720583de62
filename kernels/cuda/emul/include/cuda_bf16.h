/* Host emulator: __nv_bfloat16 with round-to-nearest-even conversions. */
#ifndef NLPD_CU_EMUL_BF16_H
#define NLPD_CU_EMUL_BF16_H

#include <stdint.h>
#include <string.h>

struct __nv_bfloat16 {
    uint16_t bits;
    __nv_bfloat16() = default;
    __nv_bfloat16(float f);
    operator float() const;
};

static inline uint16_t cu_emul_f32_to_bf16_bits(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

inline __nv_bfloat16::__nv_bfloat16(float f) : bits(cu_emul_f32_to_bf16_bits(f))
{
}
inline __nv_bfloat16::operator float() const
{
    uint32_t x = (uint32_t)bits << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static inline __nv_bfloat16 __float2bfloat16_rn(float f)
{
    return __nv_bfloat16(f);
}
static inline __nv_bfloat16 __float2bfloat16(float f)
{
    return __nv_bfloat16(f);
}
static inline float __bfloat162float(__nv_bfloat16 h)
{
    return (float)h;
}

#endif
