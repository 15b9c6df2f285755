/*
 * Optional native kernels of the fused recurrences (float32, CPU, contiguous tensors).
 *
 * rnnguard compiles this file on first use with the system C compiler (see native.py) and calls
 * it through ctypes; without a compiler the pure-PyTorch loops in lstm.py and indrnn.py run
 * instead and give the same numbers within float32 rounding.  The maths is exactly theirs
 * (docs/equations.md): the LSTM's g-gate inputs and cell LayerNorm arrive doubled, so that
 * tanh(x) = 2 sigmoid(2x) - 1 needs one exp per element, and carries mix states the way
 * torch.lerp does, so a weight of exactly 1 copies the old state bit for bit.
 *
 * Why a kernel at all: one LSTM step is a matrix multiply (left to torch, which packs W_hh for
 * oneDNN) plus some twenty element-wise passes over (B, 4H) and (B, H) tensors; fused here into one
 * pass per row, they cost a few microseconds instead of twenty operator dispatches.  IndRNN has no
 * matrix multiply inside its recurrence at all, so its whole time loop runs here.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
/* glibc's vector math library has SIMD variants of expf: declaring them lets the loops below
 * vectorise their exponentials without -ffast-math (which would break NaN/inf propagation). */
__attribute__((__simd__("notinbranch"))) float expf(float);
#endif

typedef int64_t i64;

/* A per-step carry weight m (zoneout mask, zoneout rate, padding): state = lerp(new, old, m). */
typedef struct {
    const float *p; /* NULL: the constant k */
    i64 st, sb, sh; /* element strides over time, batch and unit (0 where broadcast) */
    float k;
    int32_t on; /* 0: no carry */
} Carry;

static inline float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }

/* torch.lerp's formula, so the results match it exactly (weight 0 or 1 returns an end point). */
static inline float lerp(float start, float end, float w) {
    float diff = end - start;
    return fabsf(w) < 0.5f ? start + w * diff : end - diff * (1.0f - w);
}

/* The carry weights of row b at step t as H contiguous floats: the tensor's own row when its
 * unit stride is 1, else copied (or the constant filled) into the row's scratch. */
static inline const float *carry_row(const Carry *c, i64 t, i64 b, i64 H, float *scratch) {
    if (c->p && c->sh == 1) return c->p + t * c->st + b * c->sb;
    if (c->p) {
        const float *src = c->p + t * c->st + b * c->sb;
        for (i64 j = 0; j < H; j++) scratch[j] = src[j * c->sh];
    } else {
        for (i64 j = 0; j < H; j++) scratch[j] = c->k;
    }
    return scratch;
}

#ifdef _OPENMP
#include <omp.h>
#define THREAD_ID omp_get_thread_num()
#else
#define THREAD_ID 0
#endif

/* Mean and reciprocal standard deviation (biased variance) of n values, two passes. */
static inline void moments(const float *v, i64 n, float eps, float *mean, float *rstd) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (i64 k = 0; k < n; k++) s += v[k];
    float mu = s / (float)n, q = 0.0f;
#pragma omp simd reduction(+ : q)
    for (i64 k = 0; k < n; k++) {
        float d = v[k] - mu;
        q += d * d;
    }
    *mean = mu;
    *rstd = 1.0f / sqrtf(q / (float)n + eps);
}

/* LayerNorm backward for one row: dx = rstd (dxh - mean(dxh) - xh mean(dxh xh)), dxh = dy w.
 * dw += dy xh and (when db) db += dy accumulate the affine gradients. */
static inline void ln_row_backward(const float *dy, const float *xh, const float *w, float rstd,
                                   i64 n, float *dx, float *dw, float *db) {
    float s1 = 0.0f, s2 = 0.0f;
#pragma omp simd reduction(+ : s1, s2)
    for (i64 k = 0; k < n; k++) {
        float dxh = dy[k] * w[k];
        s1 += dxh;
        s2 += dxh * xh[k];
    }
    float m1 = s1 / (float)n, m2 = s2 / (float)n;
#pragma omp simd
    for (i64 k = 0; k < n; k++) {
        dw[k] += dy[k] * xh[k];
        dx[k] = rstd * (dy[k] * w[k] - m1 - xh[k] * m2);
    }
    if (db) {
#pragma omp simd
        for (i64 k = 0; k < n; k++) db[k] += dy[k];
    }
}

/* Ask for transparent huge pages on the 2 MiB-aligned interior of a fresh buffer.  A big tensor
 * is new memory from the kernel on every call; touching it 4 KiB page by page costs a fault per
 * page, which on virtual machines can cost more than the arithmetic.  Advice only: returns
 * whether the kernel took it, and nothing changes where huge pages are unavailable. */
int32_t rg_advise_huge(void *p, i64 nbytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t huge = (uintptr_t)1 << 21;
    uintptr_t lo = ((uintptr_t)p + huge - 1) & ~(huge - 1);
    uintptr_t hi = ((uintptr_t)p + (uintptr_t)nbytes) & ~(huge - 1);
    if (hi > lo) return madvise((void *)lo, hi - lo, MADV_HUGEPAGE) == 0;
#else
    (void)p;
    (void)nbytes;
#endif
    return 0;
}

/* ln_row_backward for a row kept un-normalised: xh = (v - mean) rstd is recomputed, not stored. */
static inline void ln_row_backward_raw(const float *dy, const float *v, float mean, float rstd,
                                       const float *w, i64 n, float *dx, float *dw, float *db) {
    float s1 = 0.0f, s2 = 0.0f;
#pragma omp simd reduction(+ : s1, s2)
    for (i64 k = 0; k < n; k++) {
        float dxh = dy[k] * w[k];
        s1 += dxh;
        s2 += dxh * (v[k] - mean) * rstd;
    }
    float m1 = s1 / (float)n, m2 = s2 / (float)n;
#pragma omp simd
    for (i64 k = 0; k < n; k++) {
        float xh = (v[k] - mean) * rstd;
        dw[k] += dy[k] * xh;
        dx[k] = rstd * (dy[k] * w[k] - m1 - xh * m2);
    }
    if (db) {
#pragma omp simd
        for (i64 k = 0; k < n; k++) db[k] += dy[k];
    }
}

/* ------------------------------------------------------------------------------------------ */
/* LSTM: one call per step; the caller runs the product with W_hh between calls.             */

typedef struct {
    i64 T, B, H;
    float eps;
    int32_t threads;                  /* rows of a step are split over this many threads */
    const float *pre;                 /* (T, B, 4H) input side incl. biases, g rows doubled; or,
                                         with ln_in, the raw input projection v */
    const float *ln_in, *b_in;        /* (4H) input LayerNorm: pre = LN(v) ln_in + b_in, or NULL */
    const float *h0, *c0;             /* (B, H) */
    const float *ln_hh;               /* (4H) gain of the recurrent LayerNorm, or NULL */
    const float *ln_cw, *ln_cb;       /* (H) doubled cell LayerNorm, or NULL */
    Carry ch, cc;                     /* carries of h and c */
    /* forward results, kept for backward */
    float *mu_in, *rs_in;             /* (T, B) moments of v (ln_in) */
    float *gates;                     /* (T, B, 4H) activated i, f, g, o */
    float *xh;                        /* (T, B, 4H) normalised recurrent projection (ln_hh) */
    float *rs;                        /* (T, B) its rstd */
    float *xc;                        /* (T, B, H) normalised candidate cell (ln_c) */
    float *rsc;                       /* (T, B) its rstd */
    float *tc;                        /* (T, B, H) tanh of the candidate cell; NULL with ln_c,
                                         where backward recomputes it from xc (saves memory) */
    float *cs, *hs;                   /* (T, B, H) states after the carry */
    float *tmp, *mbuf, *tcbuf;        /* (B, H) scratch rows */
    /* backward */
    const float *d_hs;                /* (T, B, H) gradient of every output */
    float *d_pre;                     /* (T, B, 4H) gradient of pre (of v with ln_in) */
    float *dz_all;                    /* (T, B, 4H) where the gate gradients dz go, or NULL: */
    float *dz_rows;                   /* (B, 4H) ... scratch rows, when nothing keeps them */
    float *d_raw;                     /* (T, B, 4H) gradient of the recurrent projection (ln_hh) */
    float *dh, *dh_keep, *dc;         /* (B, H): grad of h_t, its carried part, grad of c_t */
    float *d_ln_in, *d_b_in;          /* (threads, 4H): per-thread affine gradients */
    float *d_ln_hh;                   /* (threads, 4H) */
    float *d_ln_cw, *d_ln_cb;         /* (threads, H) */
} LstmArgs;

static void lstm_forward_row(const LstmArgs *a, i64 t, const float *r, i64 b) {
    const i64 B = a->B, H = a->H, G = 4 * H, row = t * B + b;
    const float *zp = a->pre + row * G, *rr = r + b * G;
    float *zin = NULL;
    if (a->ln_in) { /* the input LayerNorm, into the gates buffer the next loop overwrites */
        float mu, rstd;
        moments(zp, G, a->eps, &mu, &rstd);
        a->mu_in[row] = mu;
        a->rs_in[row] = rstd;
        zin = a->gates + row * G;
        const float *w = a->ln_in, *bias = a->b_in;
        if (bias) {
#pragma omp simd
            for (i64 k = 0; k < G; k++) zin[k] = (zp[k] - mu) * rstd * w[k] + bias[k];
        } else {
#pragma omp simd
            for (i64 k = 0; k < G; k++) zin[k] = (zp[k] - mu) * rstd * w[k];
        }
        zp = zin;
    }
    const float *hp = (t ? a->hs + (t - 1) * B * H : a->h0) + b * H;
    const float *cp = (t ? a->cs + (t - 1) * B * H : a->c0) + b * H;
    float *gt = a->gates + row * G;
    if (a->ln_hh) {
        float mu, rstd;
        moments(rr, G, a->eps, &mu, &rstd);
        a->rs[row] = rstd;
        float *xh = a->xh + row * G;
        const float *w = a->ln_hh;
#pragma omp simd
        for (i64 k = 0; k < G; k++) {
            float x = (rr[k] - mu) * rstd;
            xh[k] = x;
            gt[k] = sigm(x * w[k] + zp[k]);
        }
    } else {
#pragma omp simd
        for (i64 k = 0; k < G; k++) gt[k] = sigm(rr[k] + zp[k]);
    }
    float *gi = gt, *gf = gt + H, *gg = gt + 2 * H;
    const float *go = gt + 3 * H;
    float *cn = a->tmp + b * H;
#pragma omp simd
    for (i64 j = 0; j < H; j++) {
        gg[j] = 2.0f * gg[j] - 1.0f;
        cn[j] = gf[j] * cp[j] + gi[j] * gg[j];
    }
    float *tc = a->tc ? a->tc + row * H : a->tcbuf + b * H;
    if (a->ln_cw) {
        float mu, rstd;
        moments(cn, H, a->eps, &mu, &rstd);
        a->rsc[row] = rstd;
        float *xc = a->xc + row * H;
        const float *w = a->ln_cw, *bias = a->ln_cb;
#pragma omp simd
        for (i64 j = 0; j < H; j++) {
            float x = (cn[j] - mu) * rstd;
            xc[j] = x;
            tc[j] = 2.0f * sigm(x * w[j] + bias[j]) - 1.0f;
        }
    } else {
#pragma omp simd
        for (i64 j = 0; j < H; j++) tc[j] = 2.0f * sigm(2.0f * cn[j]) - 1.0f;
    }
    float *h = a->hs + row * H, *c = a->cs + row * H;
    if (a->ch.on) {
        const float *m = carry_row(&a->ch, t, b, H, a->mbuf + b * H);
#pragma omp simd
        for (i64 j = 0; j < H; j++) h[j] = lerp(go[j] * tc[j], hp[j], m[j]);
    } else {
#pragma omp simd
        for (i64 j = 0; j < H; j++) h[j] = go[j] * tc[j];
    }
    if (a->cc.on) {
        const float *m = carry_row(&a->cc, t, b, H, a->mbuf + b * H);
#pragma omp simd
        for (i64 j = 0; j < H; j++) c[j] = lerp(cn[j], cp[j], m[j]);
    } else {
        memcpy(c, cn, (size_t)H * sizeof(float));
    }
}

/* Step t given r = h_{t-1} W_hh^T (B, 4H). */
void rg_lstm_forward_step(const LstmArgs *a, i64 t, const float *r) {
    const i64 B = a->B;
#pragma omp parallel for num_threads(a->threads) schedule(static) if (a->threads > 1)
    for (i64 b = 0; b < B; b++) lstm_forward_row(a, t, r, b);
}

static void lstm_backward_row(const LstmArgs *a, i64 t, const float *mm, i64 b, int tid) {
    const i64 T = a->T, B = a->B, H = a->H, G = 4 * H, row = t * B + b;
    const float *gt = a->gates + row * G;
    const float *cp = (t ? a->cs + (t - 1) * B * H : a->c0) + b * H;
    const float *gi = gt, *gf = gt + H, *gg = gt + 2 * H, *go = gt + 3 * H;
    const float *dhs = a->d_hs + row * H;
    const float *tc = a->tc ? a->tc + row * H : a->tcbuf + b * H;
    if (!a->tc) { /* tanh(LN(c~)) again, from the stored normalised c~ */
        const float *xc = a->xc + row * H, *w = a->ln_cw, *bias = a->ln_cb;
        float *out = a->tcbuf + b * H;
#pragma omp simd
        for (i64 j = 0; j < H; j++) out[j] = 2.0f * sigm(xc[j] * w[j] + bias[j]) - 1.0f;
    }
    float *dh = a->dh + b * H, *keep = a->dh_keep + b * H, *dc = a->dc + b * H;
    float *dht = a->tmp + b * H;
    float *dz = a->dz_rows ? a->dz_rows + b * G : a->dz_all + row * G;
    float *dzi = dz, *dzf = dz + H, *dzg = dz + 2 * H, *dzo = dz + 3 * H;
    /* dL/dh_t: the output's own gradient, the recurrent part and the carried part. */
    if (t == T - 1) {
        memcpy(dh, dhs, (size_t)H * sizeof(float));
    } else if (a->ch.on) {
        const float *mr = mm + b * H;
#pragma omp simd
        for (i64 j = 0; j < H; j++) dh[j] = mr[j] + dhs[j] + keep[j];
    } else {
        const float *mr = mm + b * H;
#pragma omp simd
        for (i64 j = 0; j < H; j++) dh[j] = mr[j] + dhs[j];
    }
    if (a->ch.on) {
        const float *m = carry_row(&a->ch, t, b, H, a->mbuf + b * H);
#pragma omp simd
        for (i64 j = 0; j < H; j++) {
            keep[j] = m[j] * dh[j];
            dht[j] = dh[j] - dh[j] * m[j];
        }
    } else {
        memcpy(dht, dh, (size_t)H * sizeof(float));
    }
    /* Through h~ = o tanh(.): the o gate and the tanh input (reusing dh as scratch). */
    float *dt = dh;
#pragma omp simd
    for (i64 j = 0; j < H; j++) {
        float o = go[j], th = tc[j], g = dht[j];
        dzo[j] = g * th * (1.0f - o) * o;
        dt[j] = g * o * (1.0f - th * th);
    }
    float *dcn = dht; /* dL/dc~_t */
    if (a->ln_cw) {
#pragma omp simd
        for (i64 j = 0; j < H; j++) dt[j] *= 0.5f; /* the LayerNorm output came doubled */
        ln_row_backward(dt, a->xc + row * H, a->ln_cw, a->rsc[row], H, dcn,
                        a->d_ln_cw + tid * H, a->d_ln_cb + tid * H);
    } else {
        memcpy(dcn, dt, (size_t)H * sizeof(float));
    }
    if (a->cc.on) {
        const float *m = carry_row(&a->cc, t, b, H, a->mbuf + b * H);
#pragma omp simd
        for (i64 j = 0; j < H; j++) {
            float kept = dc[j] * m[j];
            float d = dcn[j] + dc[j] - kept;
            dcn[j] = d;
            dc[j] = kept + gf[j] * d;
        }
    } else {
#pragma omp simd
        for (i64 j = 0; j < H; j++) {
            float d = dcn[j] + dc[j];
            dcn[j] = d;
            dc[j] = gf[j] * d;
        }
    }
    /* c~ = f c_{t-1} + i g, with g = tanh of the halved (doubled-in) input. */
#pragma omp simd
    for (i64 j = 0; j < H; j++) {
        float d = dcn[j], i = gi[j], f = gf[j], g = gg[j];
        dzi[j] = d * g * (1.0f - i) * i;
        dzf[j] = d * cp[j] * (1.0f - f) * f;
        dzg[j] = d * i * (1.0f - g * g) * 0.5f;
    }
    if (a->ln_hh) {
        ln_row_backward(dz, a->xh + row * G, a->ln_hh, a->rs[row], G, a->d_raw + row * G,
                        a->d_ln_hh + tid * G, NULL);
    }
    if (a->ln_in) {
        ln_row_backward_raw(dz, a->pre + row * G, a->mu_in[row], a->rs_in[row], a->ln_in, G,
                            a->d_pre + row * G, a->d_ln_in + tid * G,
                            a->b_in ? a->d_b_in + tid * G : NULL);
    }
}

/* Backward of step t.  On entry a->dc holds dL/dc_t (from step t + 1, or the final state) and,
 * for t < T - 1, mm = dr_{t+1} W_hh is the recurrent part of dL/dh_t.  Writes the step's gate
 * gradients (dz_all or the dz_rows scratch), d_raw[t] (ln_hh), d_pre[t] (ln_in), and leaves dL/dc_{t-1} in a->dc and the carried part of dL/dh_t in a->dh_keep. */
void rg_lstm_backward_step(const LstmArgs *a, i64 t, const float *mm) {
    const i64 B = a->B;
#pragma omp parallel num_threads(a->threads) if (a->threads > 1)
    {
        const int tid = THREAD_ID;
#pragma omp for schedule(static)
        for (i64 b = 0; b < B; b++) lstm_backward_row(a, t, mm, b, tid);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* IndRNN: h~_t = act(pre_t + u h_{t-1}), h_t = lerp(h~_t, h_{t-1}, m_t); the whole loop.      */
/* Rows never mix, so each thread runs the whole time loop for its own rows.                  */

enum { ACT_TANH = 0, ACT_RELU = 1, ACT_LEAKY = 2 };

/* tanh with one exp: a short odd series near 0 (where 1 - e cancels), else (1 - e)/(1 + e). */
static inline float tanh1(float x) {
    float ax = fabsf(x), e = expf(-2.0f * ax);
    float big = (1.0f - e) / (1.0f + e);
    float x2 = x * x;
    float small = ax * (1.0f + x2 * (-1.0f / 3.0f + x2 * (2.0f / 15.0f + x2 * (-17.0f / 315.0f))));
    return copysignf(ax < 0.0625f ? small : big, x);
}

static inline float act_fwd(float v, int act, float slope) {
    if (act == ACT_TANH) return tanh1(v);
    if (act == ACT_RELU) return v > 0.0f ? v : (v != v ? v : 0.0f);
    return v > 0.0f ? v : v * slope;
}

/* The derivative from the activation's output y (as torch's *_backward ops take it). */
static inline float act_grad(float y, int act, float slope) {
    if (act == ACT_TANH) return 1.0f - y * y;
    if (act == ACT_RELU) return y > 0.0f ? 1.0f : 0.0f;
    return y > 0.0f ? 1.0f : slope;
}

void rg_indrnn_forward(i64 T, i64 B, i64 H, const float *pre, const float *h0, const float *u,
                       int32_t act, float slope, const Carry *m, float *acts, float *hs,
                       float *mbuf, int32_t threads) {
    const i64 BH = B * H;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (i64 b = 0; b < B; b++) {
        const i64 o = b * H;
        for (i64 t = 0; t < T; t++) {
            const float *hp = (t ? hs + (t - 1) * BH : h0) + o;
            const float *p = pre + t * BH + o;
            float *av = acts + t * BH + o, *h = hs + t * BH + o;
            if (act == ACT_TANH) {
#pragma omp simd
                for (i64 j = 0; j < H; j++) av[j] = tanh1(p[j] + u[j] * hp[j]);
            } else {
#pragma omp simd
                for (i64 j = 0; j < H; j++) av[j] = act_fwd(p[j] + u[j] * hp[j], act, slope);
            }
            if (m->on) {
                const float *w = carry_row(m, t, b, H, mbuf + o);
#pragma omp simd
                for (i64 j = 0; j < H; j++) h[j] = lerp(av[j], hp[j], w[j]);
            }
        }
    }
}

/* d_hs (T, B, H) in; d_a (T, B, H), d_h0 (B, H) out; d_u (threads, H) accumulated per thread;
 * dh and mbuf (B, H) scratch. */
void rg_indrnn_backward(i64 T, i64 B, i64 H, const float *d_hs, const float *acts,
                        const float *hs, const float *h0, const float *u, int32_t act, float slope,
                        const Carry *m, float *d_a, float *d_h0, float *d_u, float *dh,
                        float *mbuf, int32_t threads) {
    const i64 BH = B * H;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        float *du = d_u + (i64)THREAD_ID * H;
#pragma omp for schedule(static)
        for (i64 b = 0; b < B; b++) {
            const i64 o = b * H;
            float *g = dh + o;
            if (T > 0) memcpy(g, d_hs + (T - 1) * BH + o, (size_t)H * sizeof(float));
            for (i64 t = T - 1; t >= 0; t--) {
                const float *hp = (t ? hs + (t - 1) * BH : h0) + o;
                const float *av = acts + t * BH + o;
                const float *dn = t ? d_hs + (t - 1) * BH + o : NULL;
                float *da = d_a + t * BH + o;
                if (m->on) {
                    const float *w = carry_row(m, t, b, H, mbuf + o);
#pragma omp simd
                    for (i64 j = 0; j < H; j++) {
                        float gj = g[j], d = (gj - gj * w[j]) * act_grad(av[j], act, slope);
                        da[j] = d;
                        du[j] += d * hp[j];
                        g[j] = (dn ? dn[j] : 0.0f) + d * u[j] + w[j] * gj;
                    }
                } else {
#pragma omp simd
                    for (i64 j = 0; j < H; j++) {
                        float d = g[j] * act_grad(av[j], act, slope);
                        da[j] = d;
                        du[j] += d * hp[j];
                        g[j] = (dn ? dn[j] : 0.0f) + d * u[j];
                    }
                }
            }
            memcpy(d_h0 + o, g, (size_t)H * sizeof(float));
        }
    }
}
