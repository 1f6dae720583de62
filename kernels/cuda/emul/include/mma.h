/* Host emulator: nvcuda::wmma with m16n16k16 (and m16n16k8 tf32 not provided). A fragment holds its whole tile in
 * logical row-major order (the device's per-lane layout is opaque, so only uniform element-wise use is portable,
 * which this keeps exact); every *_sync call is a warp barrier first, as on the device. Products of half/bf16
 * inputs are exact in fp32 and summed in fp32. */
#ifndef NLPD_CU_EMUL_MMA_H
#define NLPD_CU_EMUL_MMA_H

#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "cuda_runtime.h"

#include <stdio.h>
#include <stdlib.h>

namespace nvcuda
{
namespace wmma
{

struct matrix_a {
};
struct matrix_b {
};
struct accumulator {
};
struct row_major {
};
struct col_major {
};
enum layout_t { mem_row_major, mem_col_major };

/* the device's rules: a 256-bit aligned pointer and a leading dimension of a multiple of 16 bytes */
template <typename P> inline void check_tile(const P *p, unsigned ldm, const char *what)
{
    if (((uintptr_t)p & 31) || (ldm * sizeof(P)) % 16) {
        fprintf(stderr,
                "cuda emulator: wmma::%s with pointer %p (must be 32-byte aligned) and ldm %u (must be a "
                "multiple of 16 bytes)\n",
                what, (const void *)p, ldm);
        abort();
    }
}

template <typename Use, int M, int N, int K> struct frag_shape;
template <int M, int N, int K> struct frag_shape<matrix_a, M, N, K> {
    static const int rows = M, cols = K;
};
template <int M, int N, int K> struct frag_shape<matrix_b, M, N, K> {
    static const int rows = K, cols = N;
};
template <int M, int N, int K> struct frag_shape<accumulator, M, N, K> {
    static const int rows = M, cols = N;
};

template <typename Use, int M, int N, int K, typename T, typename Layout = void> struct fragment {
    static const int rows = frag_shape<Use, M, N, K>::rows, cols = frag_shape<Use, M, N, K>::cols;
    enum { num_elements = rows * cols };
    T x[rows * cols];
};

template <typename Use, int M, int N, int K, typename T, typename L, typename V>
inline void fill_fragment(fragment<Use, M, N, K, T, L> &f, const V &v)
{
    cu_emul_sync_warp();
    for (int i = 0; i < f.num_elements; i++)
        f.x[i] = T(v);
}

template <typename Use, int M, int N, int K, typename T, typename L, typename P>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L> &f, const P *p, unsigned ldm)
{
    static_assert(!std::is_void<L>::value, "matrix_a/matrix_b fragments need a layout");
    check_tile(p, ldm, "load_matrix_sync");
    cu_emul_sync_warp();
    const bool row = std::is_same<L, row_major>::value;
    for (int r = 0; r < f.rows; r++)
        for (int c = 0; c < f.cols; c++)
            f.x[r * f.cols + c] = T(row ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r]);
}

template <int M, int N, int K, typename T, typename P>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T> &f, const P *p, unsigned ldm, layout_t l)
{
    check_tile(p, ldm, "load_matrix_sync");
    cu_emul_sync_warp();
    for (int r = 0; r < f.rows; r++)
        for (int c = 0; c < f.cols; c++)
            f.x[r * f.cols + c] = T(l == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r]);
}

template <int M, int N, int K, typename T, typename P>
inline void store_matrix_sync(P *p, const fragment<accumulator, M, N, K, T> &f, unsigned ldm, layout_t l)
{
    check_tile(p, ldm, "store_matrix_sync");
    cu_emul_sync_warp();
    for (int r = 0; r < f.rows; r++)
        for (int c = 0; c < f.cols; c++) {
            P v = P(f.x[r * f.cols + c]);
            if (l == mem_row_major)
                p[(size_t)r * ldm + c] = v;
            else
                p[(size_t)c * ldm + r] = v;
        }
}

template <int M, int N, int K, typename TA, typename LA, typename LB, typename TC>
inline void mma_sync(fragment<accumulator, M, N, K, TC> &d, const fragment<matrix_a, M, N, K, TA, LA> &a,
                     const fragment<matrix_b, M, N, K, TA, LB> &b, const fragment<accumulator, M, N, K, TC> &c)
{
    cu_emul_sync_warp();
    TC out[M * N];
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = (float)c.x[i * N + j];
            for (int t = 0; t < K; t++)
                s += (float)a.x[i * K + t] * (float)b.x[t * N + j];
            out[i * N + j] = TC(s);
        }
    for (int i = 0; i < M * N; i++)
        d.x[i] = out[i];
}

} // namespace wmma
} // namespace nvcuda

#endif
