/* g f'(x) for the activations whose gradient is one elementwise pass (the
 * binary ops AS_GELU_GRAD, AS_GELU_TANH_GRAD, AS_SILU_GRAD: x the input, g
 * the incoming gradient), shared by the CPU and CUDA kernels so that both
 * compute the same formula.  Written as torch's GeluBackward / SiluBackward
 * are, so the edge values (x = +-inf) come out as torch's do. */
#ifndef AS_GRAD_MATH_H
#define AS_GRAD_MATH_H

#include <math.h>

#ifdef __CUDACC__
#define AS_GM __host__ __device__ __forceinline__
#else
#define AS_GM static inline
#endif

/* Phi(x) + x phi(x) */
AS_GM float as_gelu_grad_f(float x, float g)
{
    float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
    float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
    return g * (cdf + x * pdf);
}

AS_GM double as_gelu_grad_d(double x, double g)
{
    double cdf = 0.5 * (1.0 + erf(x * 0.70710678118654752));
    double pdf = 0.39894228040143268 * exp(-0.5 * x * x);
    return g * (cdf + x * pdf);
}

/* 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 c x^2), t = tanh(k (x + c x^3)) */
AS_GM float as_gelu_tanh_grad_f(float x, float g)
{
    const float k = 0.79788456080286536f, c = 0.044715f;
    float x2 = x * x, t = tanhf(k * x * (1.0f + c * x2));
    return g * (0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * c * x2));
}

AS_GM double as_gelu_tanh_grad_d(double x, double g)
{
    const double k = 0.79788456080286536, c = 0.044715;
    double x2 = x * x, t = tanh(k * x * (1.0 + c * x2));
    return g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * c * x2));
}

/* s (1 + x (1 - s)), s = sigmoid(x) */
AS_GM float as_silu_grad_f(float x, float g)
{
    float s = 1.0f / (1.0f + expf(-x));
    return g * s * (1.0f + x * (1.0f - s));
}

AS_GM double as_silu_grad_d(double x, double g)
{
    double s = 1.0 / (1.0 + exp(-x));
    return g * s * (1.0 + x * (1.0 - s));
}

#undef AS_GM
#endif
