// Per-view preprocessing on CPU: project every Gaussian into every view and condition its
// parameters (double precision, then stored as float), and compute its conservative rectangle.
// Parallel over (view, Gaussian) forward and over Gaussians backward; the bodies are gauss_math.h's
// project_pair_fwd / project_gaussian_bwd, as on CUDA.
#include "config.h"
#include "kernels.h"
#include "gauss_math.h"

namespace pinngs {

void project_fwd_cpu(int V, int N, const float *views, const float *means, const float *precis,
                     int W, int H, float sigma_cutoff, float *params, int32_t *rects) {
#pragma omp parallel for schedule(static) collapse(2)
    for (int v = 0; v < V; ++v)
        for (int i = 0; i < N; ++i)
            project_pair_fwd(v, i, N, views, means, precis, W, H, sigma_cutoff, params, rects);
}

void project_bwd_cpu(int V, int N, const float *views, const float *means, const float *precis,
                     const float *v_params, float *v_means, float *v_precis) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; ++i)
        project_gaussian_bwd(V, N, i, views, means, precis, v_params, v_means, v_precis);
}

}  // namespace pinngs
