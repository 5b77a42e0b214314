// Per-view preprocessing on CUDA: one thread per (view, Gaussian) forward, one per Gaussian
// backward; the bodies are gauss_math.h's project_pair_fwd / project_gaussian_bwd, as on the CPU.
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
    project_pair_fwd(int(o / N), int(o % N), N, views, means, precis, W, H, k, params, rects);
}

__global__ void project_bwd_kernel(int V, int N, const float *views, const float *means,
                                   const float *precis, const float *v_params, float *v_means,
                                   float *v_precis) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    project_gaussian_bwd(V, N, i, views, means, precis, v_params, v_means, v_precis);
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
