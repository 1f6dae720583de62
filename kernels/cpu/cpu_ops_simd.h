/* The vectorised element-wise kernels of cpu_ops.c, written once over a vector of VW floats and included there
 * once per instruction set (AVX2+FMA: VW 8; AVX-512F: VW 16), so both paths stay the same code. The includer
 * defines V, VI, VW, SIMD_ATTR, SIMD_FN(name) and the V* operations (and SIMD_NO_LAYER_NORM to leave that one
 * out); tails shorter than VW go to the scalar functions. Not a header to include anywhere else. */

/* Cephes-style expf: 2^n * p(r), |r| <= ln2/2; about 1 ulp. Inputs below -87.3 give 0 (the masked keys). */
static SIMD_ATTR inline V SIMD_FN(exp)(V x)
{
    const V hi = VSET1(88.3762626647949f), lo = VSET1(-87.3365478515625f);
    V x0 = x;
    x = VMIN(VMAX(x, lo), hi);
    V n = VROUND(VMUL(x, VSET1(1.44269504088896341f)));
    V r = VFNMADD(n, VSET1(0.693359375f), x);
    r = VFNMADD(n, VSET1(-2.12194440e-4f), r);
    V p = VSET1(1.9875691500E-4f);
    p = VFMADD(p, r, VSET1(1.3981999507E-3f));
    p = VFMADD(p, r, VSET1(8.3334519073E-3f));
    p = VFMADD(p, r, VSET1(4.1665795894E-2f));
    p = VFMADD(p, r, VSET1(1.6666665459E-1f));
    p = VFMADD(p, r, VSET1(5.0000001201E-1f));
    p = VFMADD(p, VMUL(r, r), VADD(r, VSET1(1.0f)));
    VI e = VSLLI_I(VADD_I(VCVT_I(n), VSET1_I(127)), 23);
    p = VMUL(p, VCAST_I2F(e));
    return VZERO_IF_LT(p, x0, lo); /* below the range: 0 (the masked keys) */
}

/* erf as a rational function of x on [-4, 4] (the approximation Eigen and XLA use); a few ulp. */
static SIMD_ATTR inline V SIMD_FN(erf)(V x)
{
    x = VMIN(VMAX(x, VSET1(-4.0f)), VSET1(4.0f));
    V x2 = VMUL(x, x);
    V p = VSET1(-2.72614225801306e-10f);
    p = VFMADD(p, x2, VSET1(2.77068142495902e-08f));
    p = VFMADD(p, x2, VSET1(-2.10102402082508e-06f));
    p = VFMADD(p, x2, VSET1(-5.69250639462346e-05f));
    p = VFMADD(p, x2, VSET1(-7.34990630326855e-04f));
    p = VFMADD(p, x2, VSET1(-2.95459980854025e-03f));
    p = VFMADD(p, x2, VSET1(-1.60960333262415e-02f));
    p = VMUL(p, x);
    V q = VSET1(-1.45660718464996e-05f);
    q = VFMADD(q, x2, VSET1(-2.13374055278905e-04f));
    q = VFMADD(q, x2, VSET1(-1.68282697438203e-03f));
    q = VFMADD(q, x2, VSET1(-7.37332916720468e-03f));
    q = VFMADD(q, x2, VSET1(-1.42647390514189e-02f));
    return VDIV(p, q);
}

/* tanh(y) = sign(y) (1 - 2 / (exp(2|y|) + 1)); absolute error about 1e-7. */
static SIMD_ATTR inline V SIMD_FN(tanh)(V y)
{
    const V sign = VSET1(-0.0f);
    V s = VAND(y, sign), a = VANDNOT(sign, y);
    V e = SIMD_FN(exp)(VMIN(VADD(a, a), VSET1(88.0f)));
    V t = VSUB(VSET1(1.0f), VDIV(VSET1(2.0f), VADD(e, VSET1(1.0f))));
    return VOR(t, s);
}

static SIMD_ATTR inline V SIMD_FN(act_vec)(V v, enum nlpd_act act)
{
    const V half = VSET1(0.5f), one = VSET1(1.0f);
    switch (act) {
    case NLPD_ACT_NONE: return v;
    case NLPD_ACT_GELU: return VMUL(VMUL(half, v), VADD(one, SIMD_FN(erf)(VMUL(v, VSET1(0.70710678118654752f)))));
    case NLPD_ACT_GELU_TANH: {
        V v3 = VMUL(VMUL(v, v), v);
        V in = VMUL(VSET1(0.7978845608028654f), VFMADD(VSET1(0.044715f), v3, v));
        return VMUL(VMUL(half, v), VADD(one, SIMD_FN(tanh)(in)));
    }
    case NLPD_ACT_RELU: return VMAX(v, VZERO());
    case NLPD_ACT_SILU: return VDIV(v, VADD(one, SIMD_FN(exp)(VSUB(VZERO(), v))));
    case NLPD_ACT_TANH: return SIMD_FN(tanh)(v);
    }
    return v;
}

static SIMD_ATTR void SIMD_FN(bias_act_row)(float *x, const float *bias, int n, enum nlpd_act act)
{
    int i = 0;
    for (; i + VW <= n; i += VW) {
        V v = VLOAD(x + i);
        if (bias)
            v = VADD(v, VLOAD(bias + i));
        VSTORE(x + i, SIMD_FN(act_vec)(v, act));
    }
    if (i < n)
        bias_act_row_scalar(x + i, bias ? bias + i : NULL, n - i, act);
}

static SIMD_ATTR void SIMD_FN(act)(float *x, size_t n, enum nlpd_act act)
{
    size_t i = 0;
    for (; i + VW <= n; i += VW)
        VSTORE(x + i, SIMD_FN(act_vec)(VLOAD(x + i), act));
    if (i < n)
        act_scalar(x + i, n - i, act);
}

#ifndef SIMD_NO_LAYER_NORM
static SIMD_ATTR void SIMD_FN(layer_norm_row)(float *y, const float *x, const float *bias, const float *res,
                                              const float *g, const float *b, int n, float eps)
{
    V acc = VZERO();
    float sum = 0.0f;
    int i = 0;
    for (; i + VW <= n; i += VW) {
        V v = VLOAD(x + i);
        if (bias)
            v = VADD(v, VLOAD(bias + i));
        if (res)
            v = VADD(v, VLOAD(res + i));
        VSTORE(y + i, v);
        acc = VADD(acc, v);
    }
    for (; i < n; i++) {
        float v = x[i] + (bias ? bias[i] : 0.0f) + (res ? res[i] : 0.0f);
        y[i] = v;
        sum += v;
    }
    float mean = (sum + VHSUM(acc)) / (float)n;
    V vm = VSET1(mean);
    acc = VZERO();
    float var = 0.0f;
    for (i = 0; i + VW <= n; i += VW) {
        V d = VSUB(VLOAD(y + i), vm);
        acc = VFMADD(d, d, acc);
    }
    for (; i < n; i++)
        var += (y[i] - mean) * (y[i] - mean);
    float rstd = 1.0f / sqrtf((var + VHSUM(acc)) / (float)n + eps);
    V vr = VSET1(rstd);
    for (i = 0; i + VW <= n; i += VW) {
        V d = VMUL(VSUB(VLOAD(y + i), vm), vr);
        VSTORE(y + i, VFMADD(d, VLOAD(g + i), VLOAD(b + i)));
    }
    for (; i < n; i++)
        y[i] = (y[i] - mean) * rstd * g[i] + b[i];
}
#endif

static SIMD_ATTR void SIMD_FN(softmax_row)(float *x, int n)
{
    V vmx = VSET1(-FLT_MAX);
    int i = 0;
    for (; i + VW <= n; i += VW)
        vmx = VMAX(vmx, VLOAD(x + i));
    float mx = VHMAX(vmx);
    for (; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    vmx = VSET1(mx);
    V acc = VZERO();
    float sum = 0.0f;
    for (i = 0; i + VW <= n; i += VW) {
        V e = SIMD_FN(exp)(VSUB(VLOAD(x + i), vmx));
        VSTORE(x + i, e);
        acc = VADD(acc, e);
    }
    for (; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = 1.0f / (sum + VHSUM(acc));
    V vi = VSET1(inv);
    for (i = 0; i + VW <= n; i += VW)
        VSTORE(x + i, VMUL(VLOAD(x + i), vi));
    for (; i < n; i++)
        x[i] *= inv;
}

static SIMD_ATTR float SIMD_FN(logsumexp)(const float *x, int n)
{
    V vmx = VSET1(-INFINITY);
    int i = 0;
    for (; i + VW <= n; i += VW)
        vmx = VMAX(vmx, VLOAD(x + i));
    float mx = VHMAX(vmx);
    for (; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    if (mx == -INFINITY || mx != mx)
        return mx;
    vmx = VSET1(mx);
    V acc = VZERO();
    for (i = 0; i + VW <= n; i += VW)
        acc = VADD(acc, SIMD_FN(exp)(VSUB(VLOAD(x + i), vmx)));
    double sum = VHSUM(acc);
    for (; i < n; i++)
        sum += expf(x[i] - mx);
    return mx + (float)log(sum);
}
