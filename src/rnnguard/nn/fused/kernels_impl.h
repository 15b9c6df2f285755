/*
 * The native kernels, written once for a floating type: kernels.c includes this file twice, with
 * REAL = float (names ending in _f32) and REAL = double (_f64), and defines EXP, SQRT, FABS and
 * COPYSIGN as the matching math functions.  No include guard, on purpose.
 */

#define R(x) ((REAL)(x)) /* a constant in the kernel's type (a bare 0.5 would compute in double) */

static inline REAL NAME(sigm)(REAL x) { return 1 / (1 + EXP(-x)); }

/* torch.lerp's formula, so the results match it exactly (weight 0 or 1 returns an end point). */
static inline REAL NAME(lerp)(REAL start, REAL end, REAL w) {
    REAL diff = end - start;
    return FABS(w) < R(0.5) ? start + w * diff : end - diff * (1 - w);
}

/* The zoneout weights of row b at step t as H contiguous floats: the tensor's own row when its
 * unit stride is 1, else copied (or the constant filled) into the row's scratch. */
static inline const REAL *NAME(zoneout_row)(const Zoneout *c, i64 t, i64 b, i64 H, REAL *scratch) {
    const REAL *p = (const REAL *)c->p;
    if (p && c->sh == 1) return p + t * c->st + b * c->sb;
    if (p) {
        const REAL *src = p + t * c->st + b * c->sb;
        for (i64 j = 0; j < H; j++) scratch[j] = src[j * c->sh];
    } else {
        for (i64 j = 0; j < H; j++) scratch[j] = (REAL)c->k;
    }
    return scratch;
}

/* Mean and reciprocal standard deviation (biased variance) of n values, two passes. */
static inline void NAME(moments)(const REAL *v, i64 n, REAL eps, REAL *mean, REAL *rstd) {
    REAL s = 0;
#pragma omp simd reduction(+ : s)
    for (i64 k = 0; k < n; k++) s += v[k];
    REAL mu = s / (REAL)n, q = 0;
#pragma omp simd reduction(+ : q)
    for (i64 k = 0; k < n; k++) {
        REAL d = v[k] - mu;
        q += d * d;
    }
    *mean = mu;
    *rstd = 1 / SQRT(q / (REAL)n + eps);
}

/* LayerNorm backward for one row with normalised input xh = (v - shift) scale (a stored
 * normalised row passes shift 0, scale 1; a raw row its mean and rstd): dx = rstd (dxh -
 * mean(dxh) - xh mean(dxh xh)) with dxh = dy w; dw += dy xh and (when db) db += dy accumulate
 * the affine gradients. */
static inline void NAME(ln_row_backward)(const REAL *dy, const REAL *v, REAL shift, REAL scale,
                                         const REAL *w, REAL rstd, i64 n, REAL *dx, REAL *dw,
                                         REAL *db) {
    REAL s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
    for (i64 k = 0; k < n; k++) {
        REAL dxh = dy[k] * w[k];
        s1 += dxh;
        s2 += dxh * (v[k] - shift) * scale;
    }
    REAL m1 = s1 / (REAL)n, m2 = s2 / (REAL)n;
#pragma omp simd
    for (i64 k = 0; k < n; k++) {
        REAL xh = (v[k] - shift) * scale;
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
    double eps;                       /* double in both instances: one struct layout for ctypes */
    int32_t threads;                  /* rows of a step are split over this many threads */
    const REAL *pre;                 /* (T, B, 4H) input side incl. biases, g rows doubled; or,
                                         with ln_in, the raw input projection v */
    const REAL *ln_in, *b_in;        /* (4H) input LayerNorm: pre = LN(v) ln_in + b_in, or NULL */
    const REAL *h0, *c0;             /* (B, H) */
    const REAL *ln_hh;               /* (4H) gain of the recurrent LayerNorm, or NULL */
    const REAL *ln_cw, *ln_cb;       /* (H) doubled cell LayerNorm, or NULL */
    Zoneout zoneout, zoneout_cell;   /* zoneout weights of h and c */
    /* forward results, kept for backward */
    REAL *mu_in, *rs_in;             /* (T, B) moments of v (ln_in) */
    REAL *gates;                     /* (T, B, 4H) activated i, f, g, o */
    REAL *xh;                        /* (T, B, 4H) normalised recurrent projection (ln_hh) */
    REAL *rs;                        /* (T, B) its rstd */
    REAL *xc;                        /* (T, B, H) normalised candidate cell (ln_c) */
    REAL *rsc;                       /* (T, B) its rstd */
    REAL *tc;                        /* (T, B, H) tanh of the candidate cell; NULL with ln_c,
                                         where backward recomputes it from xc (saves memory) */
    REAL *cs, *hs;                   /* (T, B, H) states after zoneout */
    REAL *tmp, *mbuf, *tcbuf;        /* (B, H) scratch rows */
    /* backward */
    const REAL *d_hs;                /* (T, B, H) gradient of every output */
    REAL *d_pre;                     /* (T, B, 4H) gradient of pre (of v with ln_in) */
    REAL *dz_all;                    /* (T, B, 4H) where the gate gradients dz go, or NULL: */
    REAL *dz_rows;                   /* (B, 4H) ... scratch rows, when nothing keeps them */
    REAL *d_raw;                     /* (T, B, 4H) gradient of the recurrent projection (ln_hh) */
    REAL *dh, *dh_keep, *dc;         /* (B, H): grad of h_t, its carried part, grad of c_t */
    REAL *d_ln_in, *d_b_in;          /* (threads, 4H): per-thread affine gradients */
    REAL *d_ln_hh;                   /* (threads, 4H) */
    REAL *d_ln_cw, *d_ln_cb;         /* (threads, H) */
} NAME(LstmArgs);

static void NAME(lstm_forward_row)(const NAME(LstmArgs) *a, i64 t, const REAL *r, i64 b) {
    const i64 B = a->B, H = a->H, G = 4 * H, row = t * B + b;
    const REAL *zp = a->pre + row * G, *rr = r + b * G;
    if (a->ln_in) { /* the input LayerNorm, into the gates buffer the next loop overwrites */
        REAL mu, rstd;
        NAME(moments)(zp, G, (REAL)a->eps, &mu, &rstd);
        a->mu_in[row] = mu;
        a->rs_in[row] = rstd;
        REAL *zin = a->gates + row * G;
        const REAL *w = a->ln_in, *bias = a->b_in;
        if (bias) {
#pragma omp simd
            for (i64 k = 0; k < G; k++) zin[k] = (zp[k] - mu) * rstd * w[k] + bias[k];
        } else {
#pragma omp simd
            for (i64 k = 0; k < G; k++) zin[k] = (zp[k] - mu) * rstd * w[k];
        }
        zp = zin;
    }
    const REAL *hp = (t ? a->hs + (t - 1) * B * H : a->h0) + b * H;
    const REAL *cp = (t ? a->cs + (t - 1) * B * H : a->c0) + b * H;
    REAL *gt = a->gates + row * G;
    if (a->ln_hh) {
        REAL mu, rstd;
        NAME(moments)(rr, G, (REAL)a->eps, &mu, &rstd);
        a->rs[row] = rstd;
        REAL *xh = a->xh + row * G;
        const REAL *w = a->ln_hh;
#pragma omp simd
        for (i64 k = 0; k < G; k++) {
            REAL x = (rr[k] - mu) * rstd;
            xh[k] = x;
            gt[k] = NAME(sigm)(x * w[k] + zp[k]);
        }
    } else {
#pragma omp simd
        for (i64 k = 0; k < G; k++) gt[k] = NAME(sigm)(rr[k] + zp[k]);
    }
    REAL *gi = gt, *gf = gt + H, *gg = gt + 2 * H;
    const REAL *go = gt + 3 * H;
    REAL *cn = a->tmp + b * H;
#pragma omp simd
    for (i64 j = 0; j < H; j++) {
        gg[j] = 2 * gg[j] - 1;
        cn[j] = gf[j] * cp[j] + gi[j] * gg[j];
    }
    REAL *tc = a->tc ? a->tc + row * H : a->tcbuf + b * H;
    if (a->ln_cw) {
        REAL mu, rstd;
        NAME(moments)(cn, H, (REAL)a->eps, &mu, &rstd);
        a->rsc[row] = rstd;
        REAL *xc = a->xc + row * H;
        const REAL *w = a->ln_cw, *bias = a->ln_cb;
#pragma omp simd
        for (i64 j = 0; j < H; j++) {
            REAL x = (cn[j] - mu) * rstd;
            xc[j] = x;
            tc[j] = 2 * NAME(sigm)(x * w[j] + bias[j]) - 1;
        }
    } else {
#pragma omp simd
        for (i64 j = 0; j < H; j++) tc[j] = 2 * NAME(sigm)(2 * cn[j]) - 1;
    }
    REAL *h = a->hs + row * H, *c = a->cs + row * H;
    if (a->zoneout.on) {
        const REAL *m = NAME(zoneout_row)(&a->zoneout, t, b, H, a->mbuf + b * H);
#pragma omp simd
        for (i64 j = 0; j < H; j++) h[j] = NAME(lerp)(go[j] * tc[j], hp[j], m[j]);
    } else {
#pragma omp simd
        for (i64 j = 0; j < H; j++) h[j] = go[j] * tc[j];
    }
    if (a->zoneout_cell.on) {
        const REAL *m = NAME(zoneout_row)(&a->zoneout_cell, t, b, H, a->mbuf + b * H);
#pragma omp simd
        for (i64 j = 0; j < H; j++) c[j] = NAME(lerp)(cn[j], cp[j], m[j]);
    } else {
        memcpy(c, cn, (size_t)H * sizeof(REAL));
    }
}

/* Step t given r = h_{t-1} W_hh^T (B, 4H). */
void NAME(rg_lstm_forward_step)(const NAME(LstmArgs) *a, i64 t, const REAL *r) {
    const i64 B = a->B;
#pragma omp parallel for num_threads(a->threads) schedule(static) if (a->threads > 1)
    for (i64 b = 0; b < B; b++) NAME(lstm_forward_row)(a, t, r, b);
}

static void NAME(lstm_backward_row)(const NAME(LstmArgs) *a, i64 t, const REAL *mm, i64 b, int tid) {
    const i64 T = a->T, B = a->B, H = a->H, G = 4 * H, row = t * B + b;
    const REAL *gt = a->gates + row * G;
    const REAL *cp = (t ? a->cs + (t - 1) * B * H : a->c0) + b * H;
    const REAL *gi = gt, *gf = gt + H, *gg = gt + 2 * H, *go = gt + 3 * H;
    const REAL *dhs = a->d_hs + row * H;
    const REAL *tc = a->tc ? a->tc + row * H : a->tcbuf + b * H;
    if (!a->tc) { /* tanh(LN(c~)) again, from the stored normalised c~ */
        const REAL *xc = a->xc + row * H, *w = a->ln_cw, *bias = a->ln_cb;
        REAL *out = a->tcbuf + b * H;
#pragma omp simd
        for (i64 j = 0; j < H; j++) out[j] = 2 * NAME(sigm)(xc[j] * w[j] + bias[j]) - 1;
    }
    REAL *dh = a->dh + b * H, *keep = a->dh_keep + b * H, *dc = a->dc + b * H;
    REAL *dht = a->tmp + b * H;
    REAL *dz = a->dz_rows ? a->dz_rows + b * G : a->dz_all + row * G;
    REAL *dzi = dz, *dzf = dz + H, *dzg = dz + 2 * H, *dzo = dz + 3 * H;
    /* dL/dh_t: the output's own gradient, the recurrent part and the zoned-out part. */
    if (t == T - 1) {
        memcpy(dh, dhs, (size_t)H * sizeof(REAL));
    } else if (a->zoneout.on) {
        const REAL *mr = mm + b * H;
#pragma omp simd
        for (i64 j = 0; j < H; j++) dh[j] = mr[j] + dhs[j] + keep[j];
    } else {
        const REAL *mr = mm + b * H;
#pragma omp simd
        for (i64 j = 0; j < H; j++) dh[j] = mr[j] + dhs[j];
    }
    if (a->zoneout.on) {
        const REAL *m = NAME(zoneout_row)(&a->zoneout, t, b, H, a->mbuf + b * H);
#pragma omp simd
        for (i64 j = 0; j < H; j++) {
            keep[j] = m[j] * dh[j];
            dht[j] = dh[j] - dh[j] * m[j];
        }
    } else {
        memcpy(dht, dh, (size_t)H * sizeof(REAL));
    }
    /* Through h~ = o tanh(.): the o gate and the tanh input (reusing dh as scratch). */
    REAL *dt = dh;
#pragma omp simd
    for (i64 j = 0; j < H; j++) {
        REAL o = go[j], th = tc[j], g = dht[j];
        dzo[j] = g * th * (1 - o) * o;
        dt[j] = g * o * (1 - th * th);
    }
    REAL *dcn = dht; /* dL/dc~_t */
    if (a->ln_cw) {
#pragma omp simd
        for (i64 j = 0; j < H; j++) dt[j] *= R(0.5); /* the LayerNorm output came doubled */
        NAME(ln_row_backward)(dt, a->xc + row * H, 0, 1, a->ln_cw, a->rsc[row], H, dcn,
                              a->d_ln_cw + tid * H, a->d_ln_cb + tid * H);
    } else {
        memcpy(dcn, dt, (size_t)H * sizeof(REAL));
    }
    if (a->zoneout_cell.on) {
        const REAL *m = NAME(zoneout_row)(&a->zoneout_cell, t, b, H, a->mbuf + b * H);
#pragma omp simd
        for (i64 j = 0; j < H; j++) {
            REAL kept = dc[j] * m[j];
            REAL d = dcn[j] + dc[j] - kept;
            dcn[j] = d;
            dc[j] = kept + gf[j] * d;
        }
    } else {
#pragma omp simd
        for (i64 j = 0; j < H; j++) {
            REAL d = dcn[j] + dc[j];
            dcn[j] = d;
            dc[j] = gf[j] * d;
        }
    }
    /* c~ = f c_{t-1} + i g, with g = tanh of the halved (doubled-in) input. */
#pragma omp simd
    for (i64 j = 0; j < H; j++) {
        REAL d = dcn[j], i = gi[j], f = gf[j], g = gg[j];
        dzi[j] = d * g * (1 - i) * i;
        dzf[j] = d * cp[j] * (1 - f) * f;
        dzg[j] = d * i * (1 - g * g) * R(0.5);
    }
    if (a->ln_hh) {
        NAME(ln_row_backward)(dz, a->xh + row * G, 0, 1, a->ln_hh, a->rs[row], G,
                              a->d_raw + row * G, a->d_ln_hh + tid * G, NULL);
    }
    if (a->ln_in) {
        /* v is kept raw: its normalised form is recomputed from the stored moments */
        NAME(ln_row_backward)(dz, a->pre + row * G, a->mu_in[row], a->rs_in[row], a->ln_in,
                              a->rs_in[row], G, a->d_pre + row * G, a->d_ln_in + tid * G,
                              a->b_in ? a->d_b_in + tid * G : NULL);
    }
}

/* Backward of step t.  On entry a->dc holds dL/dc_t (from step t + 1, or the final state) and,
 * for t < T - 1, mm = dr_{t+1} W_hh is the recurrent part of dL/dh_t.  Writes the step's gate
 * gradients (dz_all or the dz_rows scratch), d_raw[t] (ln_hh) and d_pre[t] (ln_in), and leaves
 * dL/dc_{t-1} in a->dc and the zoned-out part of dL/dh_t in a->dh_keep. */
void NAME(rg_lstm_backward_step)(const NAME(LstmArgs) *a, i64 t, const REAL *mm) {
    const i64 B = a->B;
#pragma omp parallel num_threads(a->threads) if (a->threads > 1)
    {
        const int tid = THREAD_ID;
#pragma omp for schedule(static)
        for (i64 b = 0; b < B; b++) NAME(lstm_backward_row)(a, t, mm, b, tid);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* IndRNN: h~_t = act(pre_t + u h_{t-1}), h_t = lerp(h~_t, h_{t-1}, m_t); the whole loop.            */
/* Rows never mix, so each thread runs the whole time loop for its own rows.                  */

/* tanh with one exp: a short odd series near 0 (where 1 - e cancels), else (1 - e)/(1 + e). */
static inline REAL NAME(tanh1)(REAL x) {
    REAL ax = FABS(x), e = EXP(-2 * ax);
    REAL big = (1 - e) / (1 + e);
    REAL x2 = x * x;
    REAL small = ax * (1 + x2 * (R(-1.0 / 3) + x2 * (R(2.0 / 15) + x2 * R(-17.0 / 315))));
    return COPYSIGN(ax < R(0.0625) ? small : big, x);
}

static inline REAL NAME(act_fwd)(REAL v, int act, REAL slope) {
    if (act == ACT_TANH) return NAME(tanh1)(v);
    if (act == ACT_RELU) return v > 0 ? v : (v != v ? v : 0);
    return v > 0 ? v : v * slope;
}

/* The derivative from the activation's output y (as torch's *_backward ops take it). */
static inline REAL NAME(act_grad)(REAL y, int act, REAL slope) {
    if (act == ACT_TANH) return 1 - y * y;
    if (act == ACT_RELU) return y > 0 ? 1 : 0;
    return y > 0 ? 1 : slope;
}

void NAME(rg_indrnn_forward)(i64 T, i64 B, i64 H, const REAL *pre, const REAL *h0, const REAL *u,
                       int32_t act, double slope_, const Zoneout *zoneout, REAL *acts, REAL *hs,
                       REAL *mbuf, int32_t threads) {
    const REAL slope = (REAL)slope_;
    const i64 BH = B * H;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (i64 b = 0; b < B; b++) {
        const i64 o = b * H;
        for (i64 t = 0; t < T; t++) {
            const REAL *hp = (t ? hs + (t - 1) * BH : h0) + o;
            const REAL *p = pre + t * BH + o;
            REAL *av = acts + t * BH + o, *h = hs + t * BH + o;
            if (act == ACT_TANH) {
#pragma omp simd
                for (i64 j = 0; j < H; j++) av[j] = NAME(tanh1)(p[j] + u[j] * hp[j]);
            } else {
#pragma omp simd
                for (i64 j = 0; j < H; j++) av[j] = NAME(act_fwd)(p[j] + u[j] * hp[j], act, slope);
            }
            if (zoneout->on) {
                const REAL *w = NAME(zoneout_row)(zoneout, t, b, H, mbuf + o);
#pragma omp simd
                for (i64 j = 0; j < H; j++) h[j] = NAME(lerp)(av[j], hp[j], w[j]);
            }
        }
    }
}

/* d_hs (T, B, H) in; d_a (T, B, H), d_h0 (B, H) out; d_u (threads, H) accumulated per thread;
 * dh and mbuf (B, H) scratch. */
void NAME(rg_indrnn_backward)(i64 T, i64 B, i64 H, const REAL *d_hs, const REAL *acts,
                        const REAL *hs, const REAL *h0, const REAL *u, int32_t act, double slope_,
                        const Zoneout *zoneout, REAL *d_a, REAL *d_h0, REAL *d_u, REAL *dh,
                        REAL *mbuf, int32_t threads) {
    const REAL slope = (REAL)slope_;
    const i64 BH = B * H;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        REAL *du = d_u + (i64)THREAD_ID * H;
#pragma omp for schedule(static)
        for (i64 b = 0; b < B; b++) {
            const i64 o = b * H;
            REAL *g = dh + o;
            if (T > 0) memcpy(g, d_hs + (T - 1) * BH + o, (size_t)H * sizeof(REAL));
            for (i64 t = T - 1; t >= 0; t--) {
                const REAL *hp = (t ? hs + (t - 1) * BH : h0) + o;
                const REAL *av = acts + t * BH + o;
                const REAL *dn = t ? d_hs + (t - 1) * BH + o : NULL;
                REAL *da = d_a + t * BH + o;
                if (zoneout->on) {
                    const REAL *w = NAME(zoneout_row)(zoneout, t, b, H, mbuf + o);
#pragma omp simd
                    for (i64 j = 0; j < H; j++) {
                        REAL gj = g[j], d = (gj - gj * w[j]) * NAME(act_grad)(av[j], act, slope);
                        da[j] = d;
                        du[j] += d * hp[j];
                        g[j] = (dn ? dn[j] : 0) + d * u[j] + w[j] * gj;
                    }
                } else {
#pragma omp simd
                    for (i64 j = 0; j < H; j++) {
                        REAL d = g[j] * NAME(act_grad)(av[j], act, slope);
                        da[j] = d;
                        du[j] += d * hp[j];
                        g[j] = (dn ? dn[j] : 0) + d * u[j];
                    }
                }
            }
            memcpy(d_h0 + o, g, (size_t)H * sizeof(REAL));
        }
    }
}

#undef R
