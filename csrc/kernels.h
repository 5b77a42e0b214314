// Every kernel entry point, CPU and CUDA. Raw pointers only: no torch header may reach the .cu
// files, so that each one compile-checks with nvcc on a machine without a GPU (DESIGN.md §2).
// Shapes are in the trailing comments. Gradients are named v_<name>.
#pragma once
#include <cstdint>

namespace pinngs {

// ---- per-view preprocessing: project + conservative bounds ----
void project_fwd_cpu(int V, int N, const float *views,  // [V, 17]
                     const float *means,                // [N, 3]
                     const float *precis,               // [N, 6]
                     int W, int H, float sigma_cutoff,
                     float *params,                     // [V, N, 11]
                     int32_t *rects);                   // [V, N, 4]  x0 y0 x1 y1 (half-open)
void project_bwd_cpu(int V, int N, const float *views, const float *means, const float *precis,
                     const float *v_params,             // [V, N, 11]
                     float *v_means,                    // [N, 3]
                     float *v_precis);                  // [N, 6]

// ---- tile binning: per view, the Gaussians touching each TILE x TILE tile, ascending ids ----
// offsets[V*T + 1] (T = tiles per view), ids[offsets[V*T]]. Two calls: count, then fill.
int64_t bin_count_cpu(int V, int N, const int32_t *rects, int W, int H, int64_t *offsets);
void bin_fill_cpu(int V, int N, const int32_t *rects, int W, int H, const int64_t *offsets,
                  int32_t *ids);

// ---- additive rasterizer ----
void rasterize_fwd_cpu(int V, int N, const float *views, const float *params,  // [V, N, 11]
                       const float *atten,                                     // [V, N]
                       const int32_t *rects, const int64_t *offsets, const int32_t *ids,
                       int W, int H, float *image);                            // [V, H, W]
void rasterize_bwd_cpu(int V, int N, const float *views, const float *params, const float *atten,
                       const int32_t *rects, int W, int H,
                       const float *v_image,                                   // [V, H, W]
                       float *v_params,                                        // [V, N, 11]
                       float *v_atten);                                        // [V, N]

// ---- voxelizer ----
// grid: origin[3] (centre of voxel 0, mm), spacing[3] (mm), shape[3] (X, Y, Z); vol [X, Y, Z]
void voxelize_fwd_cpu(int N, const float *means, const float *precis, const float *covars,
                      const float *amps, const float *origin, const float *spacing,
                      const int *shape, float sigma_cutoff, float *vol);
void voxelize_bwd_cpu(int N, const float *means, const float *precis, const float *covars,
                      const float *amps, const float *origin, const float *spacing,
                      const int *shape, float sigma_cutoff, const float *v_vol,
                      float *v_means, float *v_precis, float *v_amps);

#ifdef PINNGS_WITH_CUDA
// CUDA launchers: same shapes, device pointers, explicit stream (cudaStream_t passed as void*).
// The voxel grid's origin, spacing and shape stay host pointers (passed to kernels by value).
void project_fwd_cuda(int V, int N, const float *views, const float *means, const float *precis,
                      int W, int H, float sigma_cutoff, float *params, int32_t *rects, void *stream);
void project_bwd_cuda(int V, int N, const float *views, const float *means, const float *precis,
                      const float *v_params, float *v_means, float *v_precis, void *stream);
// tiles per (view, Gaussian) -> counts[V*N]
void bin_count_cuda(int V, int N, const int32_t *rects, int W, int H, int64_t *counts, void *stream);
// write sortable keys (view*T + tile) * N + id at the exclusive offsets of counts
void bin_keys_cuda(int V, int N, const int32_t *rects, int W, int H, const int64_t *starts,
                   int64_t *keys, void *stream);
// sorted keys -> ids[M] and per-tile offsets[V*T + 1]
void bin_ranges_cuda(int64_t M, int V, int N, int W, int H, const int64_t *sorted_keys,
                     int32_t *ids, int64_t *offsets, void *stream);
void rasterize_fwd_cuda(int V, int N, const float *views, const float *params, const float *atten,
                        const int32_t *rects, const int64_t *offsets, const int32_t *ids,
                        int W, int H, float *image, void *stream);
// one warp per (view, Gaussian) over its rectangle, warp-reduced: no atomics, deterministic
void rasterize_bwd_cuda(int V, int N, const float *views, const float *params, const float *atten,
                        const int32_t *rects, int W, int H, const float *v_image, float *v_params,
                        float *v_atten, void *stream);
void voxelize_fwd_cuda(int N, const float *means, const float *precis, const float *covars,
                       const float *amps, const float *origin, const float *spacing,
                       const int *shape, float sigma_cutoff, float *vol, void *stream);
void voxelize_bwd_cuda(int N, const float *means, const float *precis, const float *covars,
                       const float *amps, const float *origin, const float *spacing,
                       const int *shape, float sigma_cutoff, const float *v_vol, float *v_means,
                       float *v_precis, float *v_amps, void *stream);
#endif

}  // namespace pinngs
