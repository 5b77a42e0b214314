// Voxelizer on CUDA.
//   forward:  one block per Gaussian sweeps its k-sigma box and atomically adds into the grid
//             (memory O(N + grid); float sums in arbitrary order, ~1 ulp non-determinism)
//   backward: one warp per Gaussian over its box, warp-reduced (no atomics, deterministic)
#include "config.h"
#include "cuda_common.cuh"
#include "kernels.h"
#include "gauss_math.h"

namespace pinngs {

struct Grid {
    float origin[3], spacing[3];
    int shape[3];
};

__device__ inline void gauss_box(int i, const float *means, const float *covars, const Grid &g,
                                 float k, int box[6]) {
    vox_bound_one(means + 3 * i, covars + 6 * i, k, g.origin, g.spacing, g.shape, box);
}

__global__ void voxelize_fwd_kernel(int N, const float *means, const float *precis,
                                    const float *covars, const float *amps, Grid g, float k,
                                    float *vol) {
    const int i = blockIdx.x;
    if (i >= N) return;
    int b[6];
    gauss_box(i, means, covars, g, k, b);
    const int bx = b[3] - b[0], by = b[4] - b[1], bz = b[5] - b[2];
    if (bx <= 0 || by <= 0 || bz <= 0) return;
    const long long n = (long long)bx * by * bz;
    const float *m = means + 3 * i, *P = precis + 6 * i;
    for (long long q = threadIdx.x; q < n; q += blockDim.x) {
        const int z = b[2] + int(q % bz), y = b[1] + int((q / bz) % by), x = b[0] + int(q / ((long long)bz * by));
        const float d[3] = {g.origin[0] + x * g.spacing[0] - m[0], g.origin[1] + y * g.spacing[1] - m[1],
                            g.origin[2] + z * g.spacing[2] - m[2]};
        atomicAdd(vol + ((long long)x * g.shape[1] + y) * g.shape[2] + z, vox_value(d, P, amps[i]));
    }
}

__global__ void voxelize_bwd_kernel(int N, const float *means, const float *precis,
                                    const float *covars, const float *amps, Grid g, float k,
                                    const float *v_vol, float *v_means, float *v_precis,
                                    float *v_amps) {
    const long long i = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (i >= N) return;
    int b[6];
    gauss_box(int(i), means, covars, g, k, b);
    const int bx = b[3] - b[0], by = b[4] - b[1], bz = b[5] - b[2];
    const long long n = (bx > 0 && by > 0 && bz > 0) ? (long long)bx * by * bz : 0;
    const float *m = means + 3 * i, *P = precis + 6 * i;
    const float a = amps[i];
    float s[10] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    for (long long q = lane; q < n; q += 32) {
        const int z = b[2] + int(q % bz), y = b[1] + int((q / bz) % by), x = b[0] + int(q / ((long long)bz * by));
        const float d[3] = {g.origin[0] + x * g.spacing[0] - m[0], g.origin[1] + y * g.spacing[1] - m[1],
                            g.origin[2] + z * g.spacing[2] - m[2]};
        const float G = v_vol[((long long)x * g.shape[1] + y) * g.shape[2] + z];
        const float e = vox_value(d, P, 1.f);
        const float gE = -0.5f * a * e * G;
        const float Pd0 = P[0] * d[0] + P[1] * d[1] + P[2] * d[2];
        const float Pd1 = P[1] * d[0] + P[3] * d[1] + P[4] * d[2];
        const float Pd2 = P[2] * d[0] + P[4] * d[1] + P[5] * d[2];
        s[0] -= 2.f * gE * Pd0; s[1] -= 2.f * gE * Pd1; s[2] -= 2.f * gE * Pd2;
        s[3] += gE * d[0] * d[0]; s[4] += 2.f * gE * d[0] * d[1]; s[5] += 2.f * gE * d[0] * d[2];
        s[6] += gE * d[1] * d[1]; s[7] += 2.f * gE * d[1] * d[2]; s[8] += gE * d[2] * d[2];
        s[9] += e * G;
    }
    warp_sum<10>(s);
    if (lane == 0) {
        for (int j = 0; j < 3; ++j) v_means[3 * i + j] = s[j];
        for (int j = 0; j < 6; ++j) v_precis[6 * i + j] = s[3 + j];
        v_amps[i] = s[9];
    }
}

static Grid make_grid(const float *origin, const float *spacing, const int *shape) {
    Grid g;
    for (int a = 0; a < 3; ++a) { g.origin[a] = origin[a]; g.spacing[a] = spacing[a]; g.shape[a] = shape[a]; }
    return g;
}

void voxelize_fwd_cuda(int N, const float *means, const float *precis, const float *covars,
                       const float *amps, const float *origin, const float *spacing,
                       const int *shape, float sigma_cutoff, float *vol, void *stream) {
    if (N == 0) return;  // the binding zero-fills vol
    voxelize_fwd_kernel<<<N, 256, 0, as_stream(stream)>>>(N, means, precis, covars, amps,
                                                          make_grid(origin, spacing, shape), sigma_cutoff, vol);
}

void voxelize_bwd_cuda(int N, const float *means, const float *precis, const float *covars,
                       const float *amps, const float *origin, const float *spacing,
                       const int *shape, float sigma_cutoff, const float *v_vol, float *v_means,
                       float *v_precis, float *v_amps, void *stream) {
    if (N == 0) return;
    voxelize_bwd_kernel<<<blocks_for((long long)N * 32, 256), 256, 0, as_stream(stream)>>>(
        N, means, precis, covars, amps, make_grid(origin, spacing, shape), sigma_cutoff, v_vol,
        v_means, v_precis, v_amps);
}

}  // namespace pinngs
