/*
 * optsearch reference inference in C99: the operations of a quantized sequential CNN.
 *
 * Shipped with `optsearch export RESULT_DIR --to c`. Values are either integer codes at a
 * fixed-point grid (value = code * 2^-f, exact, 64-bit accumulators) or real numbers (double),
 * as in optsearch's numpy integer reference (optsearch/integer_ref.py):
 *
 *   - a layer whose input is on a grid multiplies integer codes and shifts: integer-only;
 *   - a layer whose input is real (after a float BatchNorm or a Rescaling) multiplies the real
 *     input by the integer weight codes in double, then scales by 2^-F;
 *   - the activation quantizer Q rounds half to even (rint in the default rounding mode, or an
 *     integer rounding shift) and clips symmetrically to +-(2^(BW-1) - 1).
 *
 * Compile without fast-math and without floating-point contraction:
 *   cc -std=c99 -O2 -ffp-contract=off -o ref MODEL_ref.c -lm
 */
#ifndef OPTSEARCH_REF_H
#define OPTSEARCH_REF_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    int h, w, c;   /* shape, channels last; a vector is 1 x 1 x n */
    int fixed;     /* 1: code[] holds integers at 2^-f; 0: real[] holds the values */
    int f;
    int64_t *code;
    double *real;
} os_tensor;

typedef struct {
    int kh, kw, cin, cout;
    int sh, sw, pad_top, pad_left;
    int out_h, out_w;
    const int32_t *w;  /* codes, kh x kw x cin x cout (Keras' HWIO order) */
    int wf;
    const int32_t *b;  /* codes, or NULL when there is no bias (or it is pruned) */
    int bf;
    int relu;
    int acc_f;         /* the exact accumulator's F when the input is on a grid */
    double relu_max;   /* ReLU6: min(max(x, 0), relu_max); < 0: no upper clip (relu_max is on the 2^-acc_f grid) */
} os_conv;

typedef struct {
    int ph, pw, sh, sw, pad_top, pad_left, out_h, out_w;
} os_pool;

static int64_t os_floor_div_pow2(int64_t v, int s) {
    int64_t d = (int64_t)1 << s;
    int64_t r = ((v % d) + d) % d;
    return (v - r) / d;
}

/* v * 2^-shift rounded half to even (shift <= 0: an exact left shift). */
static int64_t os_round_shift(int64_t v, int shift) {
    if (shift <= 0) return v * ((int64_t)1 << -shift);
    int64_t q = os_floor_div_pow2(v, shift);
    int64_t rest = v - q * ((int64_t)1 << shift);
    int64_t half = (int64_t)1 << (shift - 1);
    if (rest > half || (rest == half && (q & 1))) q += 1;
    return q;
}

static int64_t os_clip(int64_t v, int64_t t) { return v > t ? t : (v < -t ? -t : v); }

static size_t os_size(const os_tensor *t) { return (size_t)t->h * t->w * t->c; }

static void os_widen8(const int8_t *src, int32_t *dst, size_t n) { for (size_t i = 0; i < n; i++) dst[i] = src[i]; }
static void os_widen16(const int16_t *src, int32_t *dst, size_t n) { for (size_t i = 0; i < n; i++) dst[i] = src[i]; }
static void os_widen32(const int32_t *src, int32_t *dst, size_t n) { for (size_t i = 0; i < n; i++) dst[i] = src[i]; }

/* The network input, as float32 values. */
static void os_input(os_tensor *out, const float *x) {
    out->fixed = 0;
    for (size_t i = 0; i < os_size(out); i++) out->real[i] = (double)x[i];
}

/* Rescaling, computed in float32 as Keras does (one multiply, one add), then widened. */
static void os_rescale(const os_tensor *in, os_tensor *out, float scale, float offset) {
    out->h = in->h; out->w = in->w; out->c = in->c; out->fixed = 0;
    for (size_t i = 0; i < os_size(in); i++) {
        double v = in->fixed ? ldexp((double)in->code[i], -in->f) : in->real[i];
        float p = (float)v * scale;
        out->real[i] = (double)(p + offset);
    }
}

/* The activation quantizer Q at (bw, f); bw = 1 is pruned (all zeros). */
static void os_quantize(const os_tensor *in, os_tensor *out, int bw, int f) {
    int64_t t = bw <= 1 ? 0 : (((int64_t)1 << (bw - 1)) - 1);
    out->h = in->h; out->w = in->w; out->c = in->c; out->fixed = 1; out->f = bw <= 1 ? 0 : f;
    for (size_t i = 0; i < os_size(in); i++) {
        int64_t q;
        if (bw <= 1) q = 0;
        else if (in->fixed) q = os_clip(os_round_shift(in->code[i], in->f - f), t);
        else {
            double r = rint(ldexp(in->real[i], f));
            q = r > (double)t ? t : (r < -(double)t ? -t : (int64_t)r);
        }
        out->code[i] = q;
    }
}

/* max(x, 0), or min(max(x, 0), max) when max >= 0 (ReLU6). Codes move to 2^-f (f >= in->f, a grid
 * that holds max exactly), so the clip is exact. */
static void os_relu(const os_tensor *in, os_tensor *out, double max, int f) {
    if (!in->fixed || max < 0) f = in->f;
    *out = (os_tensor){in->h, in->w, in->c, in->fixed, f, out->code, out->real};
    int64_t top = in->fixed && max >= 0 ? (int64_t)ldexp(max, f) : 0;
    for (size_t i = 0; i < os_size(in); i++) {
        if (in->fixed) {
            int64_t v = in->code[i] > 0 ? os_round_shift(in->code[i], in->f - f) : 0;
            out->code[i] = max >= 0 && v > top ? top : v;
        } else {
            double v = in->real[i] > 0 ? in->real[i] : 0.0;
            out->real[i] = max >= 0 && v > max ? max : v;
        }
    }
}

/* BatchNorm in float: x * scale[c] + shift[c], scale = gamma / sqrt(var + eps), shift = beta - mean * scale. */
static void os_batchnorm(const os_tensor *in, os_tensor *out, const double *scale, const double *shift) {
    out->h = in->h; out->w = in->w; out->c = in->c; out->fixed = 0;
    for (size_t i = 0; i < os_size(in); i++) {
        int c = (int)(i % (size_t)in->c);
        double v = in->fixed ? ldexp((double)in->code[i], -in->f) : in->real[i];
        out->real[i] = v * scale[c] + shift[c];
    }
}

/* Conv2D (groups 1, no dilation) or Dense (a 1x1 conv on a 1x1 input); padding zeros. */
static void os_conv2d(const os_tensor *in, os_tensor *out, const os_conv *L) {
    out->h = L->out_h; out->w = L->out_w; out->c = L->cout; out->fixed = in->fixed; out->f = L->acc_f;
    for (int oy = 0; oy < L->out_h; oy++) {
        for (int ox = 0; ox < L->out_w; ox++) {
            for (int co = 0; co < L->cout; co++) {
                int64_t iacc = 0;
                double racc = 0.0;
                for (int ky = 0; ky < L->kh; ky++) {
                    int iy = oy * L->sh + ky - L->pad_top;
                    if (iy < 0 || iy >= in->h) continue;
                    for (int kx = 0; kx < L->kw; kx++) {
                        int ix = ox * L->sw + kx - L->pad_left;
                        if (ix < 0 || ix >= in->w) continue;
                        size_t base = ((size_t)iy * in->w + ix) * in->c;
                        const int32_t *w = L->w + (((size_t)ky * L->kw + kx) * L->cin) * L->cout + co;
                        for (int ci = 0; ci < L->cin; ci++) {
                            if (in->fixed) iacc += in->code[base + ci] * (int64_t)w[(size_t)ci * L->cout];
                            else racc += in->real[base + ci] * (double)w[(size_t)ci * L->cout];
                        }
                    }
                }
                size_t o = ((size_t)oy * L->out_w + ox) * L->cout + co;
                if (in->fixed) {
                    int64_t acc = os_round_shift(iacc, in->f + L->wf - L->acc_f);
                    if (L->b) acc += os_round_shift(L->b[co], L->bf - L->acc_f);
                    if (L->relu && acc < 0) acc = 0;
                    if (L->relu && L->relu_max >= 0 && acc > (int64_t)ldexp(L->relu_max, L->acc_f))
                        acc = (int64_t)ldexp(L->relu_max, L->acc_f);
                    out->code[o] = acc;
                } else {
                    double v = ldexp(racc, -L->wf);
                    if (L->b) v += ldexp((double)L->b[co], -L->bf);
                    if (L->relu && v < 0) v = 0.0;
                    if (L->relu && L->relu_max >= 0 && v > L->relu_max) v = L->relu_max;
                    out->real[o] = v;
                }
            }
        }
    }
}

/* Max (avg = 0) or average (avg = 1) pooling; padded cells are ignored, as in Keras. */
static void os_pool2d(const os_tensor *in, os_tensor *out, const os_pool *P, int avg) {
    out->h = P->out_h; out->w = P->out_w; out->c = in->c; out->fixed = avg ? 0 : in->fixed; out->f = in->f;
    for (int oy = 0; oy < P->out_h; oy++)
        for (int ox = 0; ox < P->out_w; ox++)
            for (int c = 0; c < in->c; c++) {
                int n = 0;
                int64_t best_code = 0;
                double best = 0.0, sum = 0.0;
                for (int ky = 0; ky < P->ph; ky++) {
                    int iy = oy * P->sh + ky - P->pad_top;
                    if (iy < 0 || iy >= in->h) continue;
                    for (int kx = 0; kx < P->pw; kx++) {
                        int ix = ox * P->sw + kx - P->pad_left;
                        if (ix < 0 || ix >= in->w) continue;
                        size_t i = ((size_t)iy * in->w + ix) * in->c + c;
                        double v = in->fixed ? ldexp((double)in->code[i], -in->f) : in->real[i];
                        if (in->fixed && (n == 0 || in->code[i] > best_code)) best_code = in->code[i];
                        if (n == 0 || v > best) best = v;
                        sum += v;
                        n++;
                    }
                }
                size_t o = ((size_t)oy * P->out_w + ox) * in->c + c;
                if (avg) out->real[o] = sum / n;
                else if (in->fixed) out->code[o] = best_code;
                else out->real[o] = best;
            }
}

/* Global max (avg = 0) or average (avg = 1) pooling over the spatial axes: a 1 x 1 x c vector. */
static void os_global_pool(const os_tensor *in, os_tensor *out, int avg) {
    os_pool P = {in->h, in->w, 1, 1, 0, 0, 1, 1};
    os_pool2d(in, out, &P, avg);
}

/* Copy (flatten, dropout: no change to channels-last data), into the other buffer. */
static void os_copy(const os_tensor *in, os_tensor *out) {
    *out = (os_tensor){in->h, in->w, in->c, in->fixed, in->f, out->code, out->real};
    for (size_t i = 0; i < os_size(in); i++) {
        if (in->fixed) out->code[i] = in->code[i];
        else out->real[i] = in->real[i];
    }
}

/* Zero padding (ZeroPadding2D): top/bottom rows and left/right columns of zeros; exact (0 is a code
 * of every format), so the values keep their grid. */
static void os_pad(const os_tensor *in, os_tensor *out, int top, int bottom, int left, int right) {
    *out = (os_tensor){in->h + top + bottom, in->w + left + right, in->c, in->fixed, in->f, out->code, out->real};
    for (int y = 0; y < out->h; y++) {
        for (int x = 0; x < out->w; x++) {
            int iy = y - top, ix = x - left;
            int inside = iy >= 0 && iy < in->h && ix >= 0 && ix < in->w;
            for (int c = 0; c < in->c; c++) {
                size_t o = ((size_t)y * out->w + x) * in->c + c;
                size_t i = inside ? ((size_t)iy * in->w + ix) * in->c + c : 0;
                if (in->fixed) out->code[o] = inside ? in->code[i] : 0;
                else out->real[o] = inside ? in->real[i] : 0.0;
            }
        }
    }
}

/* Flatten: channels-last data are already in Keras' flatten order; the shape becomes 1 x 1 x n. */
static void os_flatten(const os_tensor *in, os_tensor *out) {
    os_copy(in, out);
    out->c = (int)os_size(in);
    out->h = 1;
    out->w = 1;
}

/* Reshape: channels-last data keep their (Keras') order; only the shape changes. */
static void os_reshape(const os_tensor *in, os_tensor *out, int h, int w, int c) {
    os_copy(in, out);
    out->h = h;
    out->w = w;
    out->c = c;
}

static double os_value(const os_tensor *t, size_t i) {
    return t->fixed ? ldexp((double)t->code[i], -t->f) : t->real[i];
}

#endif /* OPTSEARCH_REF_H */
