// Per-view preprocessing on CPU: project every Gaussian into every view and condition its
// parameters (double precision, then stored as float), and compute its conservative rectangle. Parallel over (view, Gaussian).
#include "config.h"
#include "kernels.h"
#include "gauss_math.h"

namespace pinngs {

void project_fwd_cpu(int V, int N, const float *views, const float *means, const float *precis,
                     int W, int H, float sigma_cutoff, float *params, int32_t *rects) {
#pragma omp parallel for schedule(static) collapse(2)
    for (int v = 0; v < V; ++v) {
        for (int i = 0; i < N; ++i) {
            const View<double> view = View<double>::load(views + v * VIEW_FLOATS);
            const double m[3] = {means[3 * i], means[3 * i + 1], means[3 * i + 2]};
            double P[6];
            for (int k = 0; k < 6; ++k) P[k] = precis[6 * i + k];
            double raw[9], p[PINNGS_PARAMS];
            project_one(view, m, P, raw);
            condition(raw, p);
            const int64_t o = int64_t(v) * N + i;
            for (int k = 0; k < PINNGS_PARAMS; ++k) params[PINNGS_PARAMS * o + k] = float(p[k]);
            bound_one(raw, sigma_cutoff, W, H, rects + 4 * o);
        }
    }
}

void project_bwd_cpu(int V, int N, const float *views, const float *means, const float *precis,
                     const float *v_params, float *v_means, float *v_precis) {
    // parallel over Gaussians; each sums its own views, so no two threads write the same output
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; ++i) {
        const double m[3] = {means[3 * i], means[3 * i + 1], means[3 * i + 2]};
        double P[6];
        for (int k = 0; k < 6; ++k) P[k] = precis[6 * i + k];
        double gm[3] = {0, 0, 0}, gP[6] = {0, 0, 0, 0, 0, 0};
        for (int v = 0; v < V; ++v) {
            const View<double> view = View<double>::load(views + v * VIEW_FLOATS);
            const int64_t o = int64_t(v) * N + i;
            double raw[9], g[PINNGS_PARAMS], graw[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
            project_one(view, m, P, raw);
            for (int k = 0; k < PINNGS_PARAMS; ++k) g[k] = v_params[PINNGS_PARAMS * o + k];
            condition_bwd(raw, g, graw);
            project_one_bwd(view, m, P, graw, gm, gP);
        }
        for (int k = 0; k < 3; ++k) v_means[3 * i + k] = float(gm[k]);
        for (int k = 0; k < 6; ++k) v_precis[6 * i + k] = float(gP[k]);
    }
}

}  // namespace pinngs
