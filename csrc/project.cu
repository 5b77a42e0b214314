// Per-view preprocessing on CUDA: one thread per (view, Gaussian); double precision inside, as on
// the CPU, because the conservative bound's conic cancels for Gaussians long along the ray.
#include "config.h"
#include "cuda_common.cuh"
#include "kernels.h"
#include "gauss_math.h"

namespace pinngs {

__global__ void project_fwd_kernel(int V, int N, const float *views, const float *means,
                                   const float *precis, int W, int H, float k, float *params,
                                   int32_t *rects) {
    const long long o = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (o >= (long long)V * N) return;
    const int v = int(o / N), i = int(o % N);
    const View<double> view = View<double>::load(views + v * VIEW_FLOATS);
    const double m[3] = {means[3 * i], means[3 * i + 1], means[3 * i + 2]};
    double P[6];
    for (int j = 0; j < 6; ++j) P[j] = precis[6 * i + j];
    double raw[9], p[PINNGS_PARAMS];
    project_one(view, m, P, raw);
    condition(raw, p);
    for (int j = 0; j < PINNGS_PARAMS; ++j) params[PINNGS_PARAMS * o + j] = float(p[j]);
    bound_one(raw, k, W, H, rects + 4 * o);
}

__global__ void project_bwd_kernel(int V, int N, const float *views, const float *means,
                                   const float *precis, const float *v_params, float *v_means,
                                   float *v_precis) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    const double m[3] = {means[3 * i], means[3 * i + 1], means[3 * i + 2]};
    double P[6];
    for (int j = 0; j < 6; ++j) P[j] = precis[6 * i + j];
    double gm[3] = {0, 0, 0}, gP[6] = {0, 0, 0, 0, 0, 0};
    for (int v = 0; v < V; ++v) {
        const View<double> view = View<double>::load(views + v * VIEW_FLOATS);
        double raw[9], g[PINNGS_PARAMS], graw[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
        project_one(view, m, P, raw);
        for (int j = 0; j < PINNGS_PARAMS; ++j) g[j] = v_params[PINNGS_PARAMS * ((long long)v * N + i) + j];
        condition_bwd(raw, g, graw);
        project_one_bwd(view, m, P, graw, gm, gP);
    }
    for (int j = 0; j < 3; ++j) v_means[3 * i + j] = float(gm[j]);
    for (int j = 0; j < 6; ++j) v_precis[6 * i + j] = float(gP[j]);
}

void project_fwd_cuda(int V, int N, const float *views, const float *means, const float *precis,
                      int W, int H, float sigma_cutoff, float *params, int32_t *rects, void *stream) {
    const long long n = (long long)V * N;
    if (n == 0) return;
    project_fwd_kernel<<<blocks_for(n, 256), 256, 0, as_stream(stream)>>>(
        V, N, views, means, precis, W, H, sigma_cutoff, params, rects);
}

void project_bwd_cuda(int V, int N, const float *views, const float *means, const float *precis,
                      const float *v_params, float *v_means, float *v_precis, void *stream) {
    if (N == 0) return;
    project_bwd_kernel<<<blocks_for(N, 256), 256, 0, as_stream(stream)>>>(
        V, N, views, means, precis, v_params, v_means, v_precis);
}

}  // namespace pinngs
