// Voxelizer on CPU: vol[x, y, z] = Σ_i a_i exp(-½ (p - m_i)ᵀ P_i (p - m_i)) at voxel centres.
//   forward:  Gaussians binned into slabs of PINNGS_VOX_SLAB planes along axis 0; each slab is
//             written by one thread (no atomics, memory O(N + grid))
//   backward: Gaussian-major over each Gaussian's box, so each thread owns its gradients
#include <algorithm>
#include <vector>

#include "config.h"
#include "kernels.h"
#include "gauss_math.h"

namespace pinngs {

namespace {
void boxes(int N, const float *means, const float *covars, const float *origin, const float *spacing,
           const int *shape, float k, std::vector<int> &box) {
    box.resize(size_t(N) * 6);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; ++i)
        vox_bound_one(means + 3 * i, covars + 6 * i, k, origin, spacing, shape, box.data() + 6 * i);
}
}  // namespace

void voxelize_fwd_cpu(int N, const float *means, const float *precis, const float *covars,
                      const float *amps, const float *origin, const float *spacing,
                      const int *shape, float sigma_cutoff, float *vol) {
    const int X = shape[0], Y = shape[1], Z = shape[2];
    std::vector<int> box;
    boxes(N, means, covars, origin, spacing, shape, sigma_cutoff, box);
    const int S = (X + PINNGS_VOX_SLAB - 1) / PINNGS_VOX_SLAB;
    // counting sort of Gaussians into slabs, ascending ids
    std::vector<int64_t> off(S + 1, 0);
    for (int i = 0; i < N; ++i) {
        const int *b = box.data() + 6 * i;
        if (b[3] <= b[0]) continue;
        for (int s = b[0] / PINNGS_VOX_SLAB; s <= (b[3] - 1) / PINNGS_VOX_SLAB; ++s) off[s + 1]++;
    }
    for (int s = 0; s < S; ++s) off[s + 1] += off[s];
    std::vector<int32_t> ids(off[S]);
    std::vector<int64_t> cur(off.begin(), off.end() - 1);
    for (int i = 0; i < N; ++i) {
        const int *b = box.data() + 6 * i;
        if (b[3] <= b[0]) continue;
        for (int s = b[0] / PINNGS_VOX_SLAB; s <= (b[3] - 1) / PINNGS_VOX_SLAB; ++s) ids[cur[s]++] = i;
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (int s = 0; s < S; ++s) {
        const int xs0 = s * PINNGS_VOX_SLAB, xs1 = std::min(X, xs0 + PINNGS_VOX_SLAB);
        std::fill(vol + int64_t(xs0) * Y * Z, vol + int64_t(xs1) * Y * Z, 0.f);
        for (int64_t k = off[s]; k < off[s + 1]; ++k) {
            const int i = ids[k];
            const int *b = box.data() + 6 * i;
            const float *m = means + 3 * i, *P = precis + 6 * i;
            const float a = amps[i];
            for (int x = std::max(xs0, b[0]); x < std::min(xs1, b[3]); ++x)
                for (int y = b[1]; y < b[4]; ++y) {
                    float *line = vol + (int64_t(x) * Y + y) * Z;
                    const float dx = origin[0] + x * spacing[0] - m[0];
                    const float dy = origin[1] + y * spacing[1] - m[1];
#pragma omp simd
                    for (int z = b[2]; z < b[5]; ++z) {
                        const float d[3] = {dx, dy, origin[2] + z * spacing[2] - m[2]};
                        line[z] += vox_value(d, P, a);
                    }
                }
        }
    }
}

void voxelize_bwd_cpu(int N, const float *means, const float *precis, const float *covars,
                      const float *amps, const float *origin, const float *spacing,
                      const int *shape, float sigma_cutoff, const float *v_vol, float *v_means,
                      float *v_precis, float *v_amps) {
    const int Y = shape[1], Z = shape[2];
    std::vector<int> box;
    boxes(N, means, covars, origin, spacing, shape, sigma_cutoff, box);
#pragma omp parallel for schedule(dynamic, 16)
    for (int i = 0; i < N; ++i) {
        const int *b = box.data() + 6 * i;
        const float *m = means + 3 * i, *P = precis + 6 * i;
        const float a = amps[i];
        float g[10] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};  // m(3), P(6), a
        for (int x = b[0]; x < b[3]; ++x)
            for (int y = b[1]; y < b[4]; ++y) {
                const float *Gl = v_vol + (int64_t(x) * Y + y) * Z;
                const float dx = origin[0] + x * spacing[0] - m[0];
                const float dy = origin[1] + y * spacing[1] - m[1];
                float s[10] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
                for (int z = b[2]; z < b[5]; ++z) {
                    const float d[3] = {dx, dy, origin[2] + z * spacing[2] - m[2]};
                    const float e = vox_value(d, P, 1.f);
                    const float gE = -0.5f * a * e * Gl[z];  // dL/dE
                    // E = dᵀPd, d = p - m:  dE/dm = -2Pd
                    const float Pd0 = P[0] * d[0] + P[1] * d[1] + P[2] * d[2];
                    const float Pd1 = P[1] * d[0] + P[3] * d[1] + P[4] * d[2];
                    const float Pd2 = P[2] * d[0] + P[4] * d[1] + P[5] * d[2];
                    s[0] -= 2.f * gE * Pd0; s[1] -= 2.f * gE * Pd1; s[2] -= 2.f * gE * Pd2;
                    s[3] += gE * d[0] * d[0]; s[4] += 2.f * gE * d[0] * d[1];
                    s[5] += 2.f * gE * d[0] * d[2]; s[6] += gE * d[1] * d[1];
                    s[7] += 2.f * gE * d[1] * d[2]; s[8] += gE * d[2] * d[2];
                    s[9] += e * Gl[z];
                }
                for (int k = 0; k < 10; ++k) g[k] += s[k];
            }
        for (int k = 0; k < 3; ++k) v_means[3 * i + k] = g[k];
        for (int k = 0; k < 6; ++k) v_precis[6 * i + k] = g[3 + k];
        v_amps[i] = g[9];
    }
}

}  // namespace pinngs
