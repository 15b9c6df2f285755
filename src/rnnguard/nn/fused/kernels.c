/*
 * Optional native kernels of the fused recurrences (CPU, float32 and float64, contiguous tensors).
 *
 * rnnguard compiles this file on first use with the system C compiler (see native.py) and calls
 * it through ctypes; without a compiler the pure-PyTorch loops in lstm.py and indrnn.py run
 * instead and give the same numbers within rounding.  The maths is exactly theirs
 * (docs/equations.md): the LSTM's g-gate inputs and cell LayerNorm arrive doubled, so that
 * tanh(x) = 2 sigmoid(2x) - 1 needs one exp per element, and zoneout weights mix states the way
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

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
/* glibc's vector math library has SIMD variants of exp/expf: declaring them lets the loops
 * vectorise their exponentials without -ffast-math (which would break NaN/inf propagation). */
__attribute__((__simd__("notinbranch"))) float expf(float);
__attribute__((__simd__("notinbranch"))) double exp(double);
#endif

typedef int64_t i64;

/* A zoneout weight m (zoneout mask, zoneout rate, padding): state = lerp(new, old, m). */
typedef struct {
    const void *p;  /* float or double as the kernel's type; NULL: the constant k */
    i64 st, sb, sh; /* element strides over time, batch and unit (0 where broadcast) */
    double k;
    int32_t on; /* 0: no zoneout */
} Zoneout;

#ifdef _OPENMP
#include <omp.h>
#define THREAD_ID omp_get_thread_num()
#else
#define THREAD_ID 0
#endif

enum { ACT_TANH = 0, ACT_RELU = 1, ACT_LEAKY = 2 };

/* The kernels themselves, once per floating type (kernels_impl.h). */
#define REAL float
#define NAME(x) x##_f32
#define EXP expf
#define SQRT sqrtf
#define FABS fabsf
#define COPYSIGN copysignf
#include "kernels_impl.h"
#undef REAL
#undef NAME
#undef EXP
#undef SQRT
#undef FABS
#undef COPYSIGN

#define REAL double
#define NAME(x) x##_f64
#define EXP exp
#define SQRT sqrt
#define FABS fabs
#define COPYSIGN copysign
#include "kernels_impl.h"
