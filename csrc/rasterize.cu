// Additive X-ray rasterizer on CUDA.
//   bin:      count tiles per (view, Gaussian) -> exclusive scan (in the binding) -> emit keys
//             (view*T + tile)*N + id -> sort (in the binding) -> per-tile ranges. Sorting by the
//             full key keeps ids ascending within a tile, so sums are deterministic.
//   forward:  one 16x16 block per (tile, view); Gaussians staged through shared memory in batches
//   backward: one warp per (view, Gaussian) over its rectangle, warp-reduced (no atomics)
#include "config.h"
#include "cuda_common.cuh"
#include "kernels.h"
#include "gauss_math.h"

namespace pinngs {

namespace {
__host__ __device__ inline int tiles_x(int W) { return (W + PINNGS_TILE - 1) / PINNGS_TILE; }
__host__ __device__ inline int tiles_y(int H) { return (H + PINNGS_TILE - 1) / PINNGS_TILE; }
}  // namespace

__global__ void bin_count_kernel(int V, int N, const int32_t *rects, int W, int H, int64_t *counts) {
    const long long o = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (o >= (long long)V * N) return;
    const int32_t *r = rects + 4 * o;
    if (r[2] <= r[0] || r[3] <= r[1]) { counts[o] = 0; return; }
    const int tx0 = r[0] / PINNGS_TILE, tx1 = (r[2] - 1) / PINNGS_TILE;
    const int ty0 = r[1] / PINNGS_TILE, ty1 = (r[3] - 1) / PINNGS_TILE;
    counts[o] = (int64_t)(tx1 - tx0 + 1) * (ty1 - ty0 + 1);
}

__global__ void bin_keys_kernel(int V, int N, const int32_t *rects, int W, int H,
                                const int64_t *starts, int64_t *keys) {
    const long long o = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (o >= (long long)V * N) return;
    const int32_t *r = rects + 4 * o;
    if (r[2] <= r[0] || r[3] <= r[1]) return;
    const int v = int(o / N), i = int(o % N);
    const int TX = tiles_x(W), T = TX * tiles_y(H);
    const int tx0 = r[0] / PINNGS_TILE, tx1 = (r[2] - 1) / PINNGS_TILE;
    const int ty0 = r[1] / PINNGS_TILE, ty1 = (r[3] - 1) / PINNGS_TILE;
    int64_t w = starts[o];
    for (int ty = ty0; ty <= ty1; ++ty)
        for (int tx = tx0; tx <= tx1; ++tx)
            keys[w++] = ((int64_t)v * T + ty * TX + tx) * N + i;
}

__global__ void bin_ranges_kernel(long long M, int N, long long VT, const int64_t *keys,
                                  int32_t *ids, int64_t *offsets) {
    const long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (j >= M) return;
    const long long t = keys[j] / N;
    ids[j] = int32_t(keys[j] % N);
    const long long prev = j == 0 ? -1 : keys[j - 1] / N;
    for (long long s = prev + 1; s <= t; ++s) offsets[s] = j;  // first entry of tiles (prev, t]
    if (j == M - 1)
        for (long long s = t + 1; s <= VT; ++s) offsets[s] = M;
}

constexpr int BATCH = PINNGS_TILE * PINNGS_TILE;

__global__ void rasterize_fwd_kernel(int N, const float *views, const float *params,
                                     const float *atten, const int32_t *rects,
                                     const int64_t *offsets, const int32_t *ids, int W, int H,
                                     float *image) {
    const int v = blockIdx.y, t = blockIdx.x;
    const int TX = tiles_x(W), T = TX * tiles_y(H);
    const int x = (t % TX) * PINNGS_TILE + threadIdx.x, y = (t / TX) * PINNGS_TILE + threadIdx.y;
    const int tid = threadIdx.y * PINNGS_TILE + threadIdx.x;
    __shared__ float sp[BATCH][PINNGS_PARAMS + 1];  // params + amp
    __shared__ int sr[BATCH][4];
    const long long beg = offsets[(long long)v * T + t], end = offsets[(long long)v * T + t + 1];
    const float px = float(x) + 0.5f, py = float(y) + 0.5f;
    float acc = 0.f;
    for (long long b = beg; b < end; b += BATCH) {
        __syncthreads();
        if (b + tid < end) {  // stage one Gaussian per thread
            const long long o = (long long)v * N + ids[b + tid];
            for (int k = 0; k < PINNGS_PARAMS; ++k) sp[tid][k] = params[PINNGS_PARAMS * o + k];
            sp[tid][PINNGS_PARAMS] = params[PINNGS_PARAMS * o + 10] * atten[o];
            for (int k = 0; k < 4; ++k) sr[tid][k] = rects[4 * o + k];
        }
        __syncthreads();
        const int n = int(min((long long)BATCH, end - b));
        for (int j = 0; j < n; ++j) {
            // same inclusion rule as the CPU: the pixel must lie in the Gaussian's rectangle
            if (x < sr[j][0] || x >= sr[j][2] || y < sr[j][1] || y >= sr[j][3]) continue;
            acc += pair_value(px - sp[j][0], py - sp[j][1], sp[j], sp[j][PINNGS_PARAMS]);
        }
    }
    if (x < W && y < H) {
        const View<float> view = View<float>::load(views + v * VIEW_FLOATS);
        image[((long long)v * H + y) * W + x] = acc * pixel_L(px, py, view.fx, view.fy, view.cx, view.cy);
    }
}

__global__ void rasterize_bwd_kernel(int V, int N, const float *views, const float *params,
                                     const float *atten, const int32_t *rects, int W, int H,
                                     const float *v_image, float *v_params, float *v_atten) {
    const long long o = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (o >= (long long)V * N) return;  // whole warps exit together
    const int v = int(o / N);
    const float *p = params + PINNGS_PARAMS * o;
    const int32_t *r = rects + 4 * o;
    const float a = atten[o], amp = p[10] * a;
    const View<float> view = View<float>::load(views + v * VIEW_FLOATS);
    float s[PINNGS_PARAMS] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    const int rw = r[2] - r[0], rh = r[3] - r[1];
    const long long npx = (rw > 0 && rh > 0) ? (long long)rw * rh : 0;
    for (long long q = lane; q < npx; q += 32) {
        const int x = r[0] + int(q % rw), y = r[1] + int(q / rw);
        const float px = float(x) + 0.5f, py = float(y) + 0.5f;
        const float G = v_image[((long long)v * H + y) * W + x] *
                        pixel_L(px, py, view.fx, view.fy, view.cx, view.cy);
        pair_grad(px - p[0], py - p[1], p, amp, G, s);
    }
    warp_sum<PINNGS_PARAMS>(s);
    if (lane == 0) {
        for (int k = 0; k < PINNGS_PARAMS - 1; ++k) v_params[PINNGS_PARAMS * o + k] = s[k];
        v_params[PINNGS_PARAMS * o + 10] = s[10] * a;
        v_atten[o] = s[10] * p[10];
    }
}

void bin_count_cuda(int V, int N, const int32_t *rects, int W, int H, int64_t *counts, void *stream) {
    const long long n = (long long)V * N;
    if (n == 0) return;
    bin_count_kernel<<<blocks_for(n, 256), 256, 0, as_stream(stream)>>>(V, N, rects, W, H, counts);
}

void bin_keys_cuda(int V, int N, const int32_t *rects, int W, int H, const int64_t *starts,
                   int64_t *keys, void *stream) {
    const long long n = (long long)V * N;
    if (n == 0) return;
    bin_keys_kernel<<<blocks_for(n, 256), 256, 0, as_stream(stream)>>>(V, N, rects, W, H, starts, keys);
}

void bin_ranges_cuda(int64_t M, int V, int N, int W, int H, const int64_t *sorted_keys,
                     int32_t *ids, int64_t *offsets, void *stream) {
    if (M == 0) return;  // the binding zero-fills offsets
    const long long VT = (long long)V * tiles_x(W) * tiles_y(H);
    bin_ranges_kernel<<<blocks_for(M, 256), 256, 0, as_stream(stream)>>>(M, N, VT, sorted_keys, ids, offsets);
}

void rasterize_fwd_cuda(int V, int N, const float *views, const float *params, const float *atten,
                        const int32_t *rects, const int64_t *offsets, const int32_t *ids, int W,
                        int H, float *image, void *stream) {
    if (V == 0 || W == 0 || H == 0) return;
    const dim3 grid(tiles_x(W) * tiles_y(H), V), block(PINNGS_TILE, PINNGS_TILE);
    rasterize_fwd_kernel<<<grid, block, 0, as_stream(stream)>>>(N, views, params, atten, rects,
                                                                offsets, ids, W, H, image);
}

void rasterize_bwd_cuda(int V, int N, const float *views, const float *params, const float *atten,
                        const int32_t *rects, int W, int H, const float *v_image, float *v_params,
                        float *v_atten, void *stream) {
    const long long n = (long long)V * N;
    if (n == 0) return;
    rasterize_bwd_kernel<<<blocks_for(n * 32, 256), 256, 0, as_stream(stream)>>>(
        V, N, views, params, atten, rects, W, H, v_image, v_params, v_atten);
}

}  // namespace pinngs
