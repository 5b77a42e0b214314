// Additive X-ray rasterizer on CPU (OpenMP).
//   bin:      counting sort of (view, Gaussian) rectangles into TILE x TILE tiles, ids ascending
//   forward:  tile-major; each tile accumulates in a private buffer, so no atomics
//   backward: Gaussian-major over each rectangle; each (view, Gaussian) owns its gradient, so no
//             atomics either
// The pixel-pair math lives in gauss_math.h, shared with the CUDA kernels.
#include <algorithm>
#include <cmath>
#include <vector>

#include "config.h"
#include "kernels.h"
#include "gauss_math.h"

namespace pinngs {

namespace {
inline int tiles_x(int W) { return (W + PINNGS_TILE - 1) / PINNGS_TILE; }
inline int tiles_y(int H) { return (H + PINNGS_TILE - 1) / PINNGS_TILE; }
// inclusive tile range t[0..3] = (tx0, ty0, tx1, ty1) of a rectangle; false when it is empty
inline bool tile_range(const int32_t *r, int t[4]) {
    if (r[2] <= r[0] || r[3] <= r[1]) return false;
    t[0] = r[0] / PINNGS_TILE; t[1] = r[1] / PINNGS_TILE;
    t[2] = (r[2] - 1) / PINNGS_TILE; t[3] = (r[3] - 1) / PINNGS_TILE;
    return true;
}
}  // namespace

int64_t bin_count_cpu(int V, int N, const int32_t *rects, int W, int H, int64_t *offsets) {
    const int TX = tiles_x(W), TY = tiles_y(H), T = TX * TY;
    std::fill(offsets, offsets + int64_t(V) * T + 1, 0);
#pragma omp parallel for schedule(static)
    for (int v = 0; v < V; ++v) {
        int64_t *cnt = offsets + 1 + int64_t(v) * T;
        for (int i = 0; i < N; ++i) {
            int t[4];
            if (!tile_range(rects + 4 * (int64_t(v) * N + i), t)) continue;
            for (int ty = t[1]; ty <= t[3]; ++ty)
                for (int tx = t[0]; tx <= t[2]; ++tx) cnt[ty * TX + tx]++;
        }
    }
    for (int64_t t = 0; t < int64_t(V) * T; ++t) offsets[t + 1] += offsets[t];
    return offsets[int64_t(V) * T];
}

void bin_fill_cpu(int V, int N, const int32_t *rects, int W, int H, const int64_t *offsets,
                  int32_t *ids) {
    const int TX = tiles_x(W), TY = tiles_y(H), T = TX * TY;
#pragma omp parallel for schedule(static)
    for (int v = 0; v < V; ++v) {
        std::vector<int64_t> cursor(offsets + int64_t(v) * T, offsets + int64_t(v + 1) * T);
        for (int i = 0; i < N; ++i) {
            int t[4];
            if (!tile_range(rects + 4 * (int64_t(v) * N + i), t)) continue;
            for (int ty = t[1]; ty <= t[3]; ++ty)
                for (int tx = t[0]; tx <= t[2]; ++tx) ids[cursor[ty * TX + tx]++] = i;
        }
    }
}

void rasterize_fwd_cpu(int V, int N, const float *views, const float *params, const float *atten,
                       const int32_t *rects, const int64_t *offsets, const int32_t *ids, int W,
                       int H, float *image) {
    const int TX = tiles_x(W), TY = tiles_y(H), T = TX * TY;
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t vt = 0; vt < int64_t(V) * T; ++vt) {
        const int v = int(vt / T), t = int(vt % T);
        const int X0 = (t % TX) * PINNGS_TILE, Y0 = (t / TX) * PINNGS_TILE;
        const int X1 = std::min(X0 + PINNGS_TILE, W), Y1 = std::min(Y0 + PINNGS_TILE, H);
        alignas(64) float acc[PINNGS_TILE * PINNGS_TILE] = {0.f};
        for (int64_t k = offsets[vt]; k < offsets[vt + 1]; ++k) {
            const int i = ids[k];
            const int64_t o = int64_t(v) * N + i;
            const float *p = params + PINNGS_PARAMS * o;
            const int32_t *r = rects + 4 * o;
            const float amp = p[10] * atten[o];
            const int xa = std::max(X0, int(r[0])), xb = std::min(X1, int(r[2]));
            const int ya = std::max(Y0, int(r[1])), yb = std::min(Y1, int(r[3]));
            for (int y = ya; y < yb; ++y) {
                const PairRow<float> pr(float(y) + 0.5f - p[1], p);
                float *row = acc + (y - Y0) * PINNGS_TILE;
                const float x0 = float(X0) + 0.5f - p[0];
                // The hot loop. A fixed 16-lane row with a mask vectorises completely (one AVX-512
                // or two AVX2 iterations), where a loop over the clipped span [xa, xb) would run
                // mostly in scalar remainders.
#pragma omp simd
                for (int j = 0; j < PINNGS_TILE; ++j) {
                    const int x = X0 + j;
                    const float val = pr.value(x0 + float(j), amp);
                    row[j] += (x >= xa && x < xb) ? val : 0.f;
                }
            }
        }
        const View<float> view = View<float>::load(views + v * VIEW_FLOATS);
        for (int y = Y0; y < Y1; ++y)
            for (int x = X0; x < X1; ++x)
                image[(int64_t(v) * H + y) * W + x] =
                    acc[(y - Y0) * PINNGS_TILE + (x - X0)] *
                    pixel_L(float(x) + 0.5f, float(y) + 0.5f, view.fx, view.fy, view.cx, view.cy);
    }
}

void rasterize_bwd_cpu(int V, int N, const float *views, const float *params, const float *atten,
                       const int32_t *rects, int W, int H, const float *v_image, float *v_params,
                       float *v_atten) {
    // G = v_image · L, once per pixel; rows padded by one tile of zeros so that the fixed-width
    // chunks below may read past a row's end
    const int64_t S = W + PINNGS_TILE;
    std::vector<float> G(size_t(V) * H * S, 0.f);
#pragma omp parallel for schedule(static)
    for (int64_t vy = 0; vy < int64_t(V) * H; ++vy) {
        const int v = int(vy / H), y = int(vy % H);
        const View<float> view = View<float>::load(views + v * VIEW_FLOATS);
        for (int x = 0; x < W; ++x)
            G[vy * S + x] = v_image[vy * W + x] *
                            pixel_L(float(x) + 0.5f, float(y) + 0.5f, view.fx, view.fy, view.cx, view.cy);
    }
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t o = 0; o < int64_t(V) * N; ++o) {
        const int v = int(o / N);
        const float *p = params + PINNGS_PARAMS * o;
        const int32_t *r = rects + 4 * o;
        float *gp = v_params + PINNGS_PARAMS * o;
        for (int k = 0; k < PINNGS_PARAMS; ++k) gp[k] = 0.f;
        v_atten[o] = 0.f;
        if (r[2] <= r[0] || r[3] <= r[1]) continue;
        const float a = atten[o], amp = p[10] * a;
        // Per row dy is constant, so the 11 parameter gradients (pair_grad in gauss_math.h) are
        // combinations of 7 row sums of the pair's (ga, gb, grho, re·G) weighted by 1, dx, dx²;
        // the inner loop keeps only those 7 accumulators (11 spilled registers and ran 4-5x slower).
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0, s8 = 0, s9 = 0, s10 = 0;
        for (int y = r[1]; y < r[3]; ++y) {
            const float dy = float(y) + 0.5f - p[1];
            const float *Grow = G.data() + (int64_t(v) * H + y) * S;
            float A0 = 0, A1 = 0, B0 = 0, R0 = 0, R1 = 0, R2 = 0, E0 = 0;
            for (int xs = r[0]; xs < r[2]; xs += PINNGS_TILE) {
#pragma omp simd reduction(+ : A0, A1, B0, R0, R1, R2, E0)
                for (int j = 0; j < PINNGS_TILE; ++j) {
                    const int x = xs + j;
                    const float Gx = x < r[2] ? Grow[x] : 0.f;  // every term below is ∝ G
                    const float dx = float(x) + 0.5f - p[0];
                    float ga, gb, gr, re;
                    pair_grad_core(dx, dy, p, amp, Gx, ga, gb, gr, re);
                    A0 += ga;
                    A1 += ga * dx;
                    B0 += gb;
                    R0 += gr;
                    R1 += gr * dx;
                    R2 += gr * dx * dx;
                    E0 += re * Gx;
                }
            }
            s0 -= A0 * p[2] + 2.f * (R0 * p[5] + p[7] * R1 + p[8] * dy * R0);
            s1 -= A0 * p[3] + B0 * p[4] + 2.f * (R0 * p[6] + p[8] * R1 + p[9] * dy * R0);
            s2 += A1;
            s3 += A0 * dy;
            s4 += B0 * dy;
            s5 += 2.f * R1;
            s6 += 2.f * R0 * dy;
            s7 += R2;
            s8 += 2.f * R1 * dy;
            s9 += R0 * dy * dy;
            s10 += E0;
        }
        gp[0] = s0; gp[1] = s1; gp[2] = s2; gp[3] = s3; gp[4] = s4; gp[5] = s5;
        gp[6] = s6; gp[7] = s7; gp[8] = s8; gp[9] = s9;
        gp[10] = s10 * a;   // amp = zc · atten
        v_atten[o] = s10 * p[10];
    }
}

}  // namespace pinngs
