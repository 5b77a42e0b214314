// Exact X-ray line integral of an anisotropic 3D Gaussian, shared by the CPU and CUDA kernels.
//
// DESIGN.md §3: for a ray o + s d, |d| = 1,
//   ∫ G ds = sqrt(2π / A) · exp(-½ (C - B²/A)),  A = dᵀPd, B = dᵀP(o-m), C = (o-m)ᵀP(o-m).
//
// Evaluated literally in float32 this loses everything: C ~ (700 mm / σ)² ~ 1e6, so C - B²/A
// cancels to ~0.1 absolute. We therefore re-parametrise every pixel ray by its offset Δ (pixels)
// from the Gaussian's projected centre (u0, v0), in the camera frame where the unnormalised ray is
// D = (X, Y, 1). With mc = R(m - o) = (x, y, z) and Pc = R P Rᵀ:
//   E(D) = C - (DᵀPc mc)² / (DᵀPc D)          (Mahalanobis² distance of the mean to the ray)
//        = h - B̃²/Ã,   h = z² ΔnᵀPcΔn,  l = z (Pc mc)·Δn,  Ã = C + 2l + h,  B̃ = l + h
// where Δn = Δ / f is the offset in normalised image coordinates (no z component). Every term is
// now O(k²) for a k-sigma pixel and the only large number, Ã ≈ C, enters through ratios.
// The integral becomes  amp · L(pixel) · Ã^{-1/2} · exp(-E/2)  with amp = a·z·sqrt(2π) and
// L = |D| = sqrt(1 + X² + Y²) a per-pixel factor that is pulled out of the sum over Gaussians.
//
// Conditioning for float32. Since hÃ - B̃² = hC - l², the exponent is exactly
//   E = (h C - l²) / Ã = Δᵀ M̃ Δ / ρ,    M̃ = H - λλᵀ/C (2x2, pixels),  ρ = Ã / C = 1 + (2l + h)/C.
// M̃ is formed in double and stored as its Cholesky factor, so a needle's conic (condition number
// up to 1e4) is evaluated as a sum of squares whose float32 error grows with sqrt(cond), not cond;
// ρ ≈ 1 needs only relative precision. The pair value is atten · zc · ρ^{-1/2} · exp(-E/2) · L with
// zc = z sqrt(2π) / sqrt(C).
//
// Raw per (view, Gaussian) quantities (project_one, 9, double): u0 v0 ca cb cc lx ly C zs
//   u0, v0   projected centre (pixels; pixel (r, c) centre is (c+.5, r+.5))
//   h = ca dx² + 2 cb dx dy + cc dy²,  l = lx dx + ly dy   (dx, dy in pixels),  C,  zs = z sqrt(2π)
// Stored parameters (condition(), PINNGS_PARAMS = 11, what the rasterizer reads):
//   0 u0, 1 v0, 2 l00, 3 l10, 4 l11   ΔᵀM̃Δ = (l00 dx + l10 dy)² + (l11 dy)²
//   5 kx, 6 ky                        = (lx, ly) / C
//   7 e00, 8 e01, 9 e11               = (ca, cb, cc) / C      ρ = 1 + 2(kx dx + ky dy) + e-form
//   10 zc                             = zs / sqrt(C)
#pragma once

#ifdef __CUDACC__
#define PINNGS_HD __host__ __device__ __forceinline__
#else
#define PINNGS_HD inline
#endif

#include <cmath>

#include "config.h"

namespace pinngs {

#ifndef __CUDACC__
using std::ceil;
using std::exp;
using std::floor;
using std::fmax;
using std::fmin;
using std::sqrt;
#endif

constexpr double SQRT_2PI = 2.5066282746310002;

// A C-arm view as the kernels see it: source o (mm), rotation rows (u, v, w) with w the axis
// from source to detector, pinhole intrinsics in pixels. Packed as 17 floats per view.
constexpr int VIEW_FLOATS = 17;  // o(3) R(9, row-major) fx fy cx cy near_mm

template <typename T> struct View {
    T o[3], R[9], fx, fy, cx, cy, near_mm;
    PINNGS_HD static View load(const float *p) {
        View v;
        for (int k = 0; k < 3; ++k) v.o[k] = T(p[k]);
        for (int k = 0; k < 9; ++k) v.R[k] = T(p[3 + k]);
        v.fx = T(p[12]); v.fy = T(p[13]); v.cx = T(p[14]); v.cy = T(p[15]); v.near_mm = T(p[16]);
        return v;
    }
};

// symmetric 3x3 stored as (00, 01, 02, 11, 12, 22)
template <typename T> PINNGS_HD void sym_to_full(const T s[6], T M[9]) {
    M[0] = s[0]; M[1] = s[1]; M[2] = s[2];
    M[3] = s[1]; M[4] = s[3]; M[5] = s[4];
    M[6] = s[2]; M[7] = s[4]; M[8] = s[5];
}

// Pc = R M Rᵀ (full 3x3, row-major)
template <typename T> PINNGS_HD void rot_sandwich(const T R[9], const T M[9], T out[9]) {
    T RM[9];
    for (int a = 0; a < 3; ++a)
        for (int j = 0; j < 3; ++j)
            RM[3 * a + j] = R[3 * a] * M[j] + R[3 * a + 1] * M[3 + j] + R[3 * a + 2] * M[6 + j];
    for (int a = 0; a < 3; ++a)
        for (int b = 0; b < 3; ++b)
            out[3 * a + b] = RM[3 * a] * R[3 * b] + RM[3 * a + 1] * R[3 * b + 1] + RM[3 * a + 2] * R[3 * b + 2];
}

// ---------------------------------------------------------------------------------------------
// Per (view, Gaussian) preprocessing. Returns false when the mean is not in front of the source
// (z < near): such a Gaussian is culled in this view (params zeroed, empty rect).
template <typename T>
PINNGS_HD bool project_one(const View<T> &v, const T m[3], const T prec[6], T out[9]) {
    T d[3] = {m[0] - v.o[0], m[1] - v.o[1], m[2] - v.o[2]};
    T mc[3];
    for (int a = 0; a < 3; ++a) mc[a] = v.R[3 * a] * d[0] + v.R[3 * a + 1] * d[1] + v.R[3 * a + 2] * d[2];
    const T x = mc[0], y = mc[1], z = mc[2];
    if (!(z > v.near_mm)) {
        for (int k = 0; k < 9; ++k) out[k] = T(0);
        return false;
    }
    T P[9], Pc[9];
    sym_to_full(prec, P);
    rot_sandwich(v.R, P, Pc);
    T q[3];
    for (int a = 0; a < 3; ++a) q[a] = Pc[3 * a] * x + Pc[3 * a + 1] * y + Pc[3 * a + 2] * z;
    const T iz = T(1) / z;
    out[0] = v.fx * x * iz + v.cx;
    out[1] = v.fy * y * iz + v.cy;
    out[2] = z * z * Pc[0] / (v.fx * v.fx);
    out[3] = z * z * Pc[1] / (v.fx * v.fy);
    out[4] = z * z * Pc[4] / (v.fy * v.fy);
    out[5] = z * q[0] / v.fx;
    out[6] = z * q[1] / v.fy;
    out[7] = x * q[0] + y * q[1] + z * q[2];
    out[8] = z * T(SQRT_2PI);
    return true;
}

// Backward of project_one: given v_out[9], accumulate v_m[3] and v_prec[6] (symmetric storage:
// an off-diagonal entry receives the gradient of both matrix entries it stands for).
template <typename T>
PINNGS_HD void project_one_bwd(const View<T> &v, const T m[3], const T prec[6], const T g[9],
                               T v_m[3], T v_prec[6]) {
    T d[3] = {m[0] - v.o[0], m[1] - v.o[1], m[2] - v.o[2]};
    T mc[3];
    for (int a = 0; a < 3; ++a) mc[a] = v.R[3 * a] * d[0] + v.R[3 * a + 1] * d[1] + v.R[3 * a + 2] * d[2];
    const T x = mc[0], y = mc[1], z = mc[2];
    if (!(z > v.near_mm)) return;
    T P[9], Pc[9];
    sym_to_full(prec, P);
    rot_sandwich(v.R, P, Pc);
    T q[3];
    for (int a = 0; a < 3; ++a) q[a] = Pc[3 * a] * x + Pc[3 * a + 1] * y + Pc[3 * a + 2] * z;
    const T fx = v.fx, fy = v.fy, iz = T(1) / z;

    T gmc[3] = {T(0), T(0), T(0)};
    T GPc[9] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
    // u0 = fx x/z + cx, v0 = fy y/z + cy
    gmc[0] += g[0] * fx * iz;
    gmc[1] += g[1] * fy * iz;
    T gz = -g[0] * fx * x * iz * iz - g[1] * fy * y * iz * iz;
    // conic
    gz += g[2] * T(2) * z * Pc[0] / (fx * fx) + g[3] * T(2) * z * Pc[1] / (fx * fy) + g[4] * T(2) * z * Pc[4] / (fy * fy);
    GPc[0] += g[2] * z * z / (fx * fx);
    GPc[1] += g[3] * z * z / (fx * fy);
    GPc[4] += g[4] * z * z / (fy * fy);
    // lx = z qx/fx, ly = z qy/fy, C = mc·q
    gz += g[5] * q[0] / fx + g[6] * q[1] / fy;
    T gq[3] = {g[5] * z / fx + g[7] * x, g[6] * z / fy + g[7] * y, g[7] * z};
    gmc[0] += g[7] * q[0];
    gmc[1] += g[7] * q[1];
    gz += g[7] * q[2];
    // zs = z sqrt(2π)
    gz += g[8] * T(SQRT_2PI);
    gmc[2] += gz;
    // q = Pc mc
    for (int a = 0; a < 3; ++a) {
        gmc[a] += Pc[a] * gq[0] + Pc[3 + a] * gq[1] + Pc[6 + a] * gq[2];
        for (int b = 0; b < 3; ++b) GPc[3 * a + b] += gq[a] * mc[b];
    }
    // mc = R (m - o)  ->  v_m = Rᵀ gmc;  Pc = R P Rᵀ  ->  GP = Rᵀ GPc R
    for (int j = 0; j < 3; ++j) v_m[j] += v.R[j] * gmc[0] + v.R[3 + j] * gmc[1] + v.R[6 + j] * gmc[2];
    T Rt[9];
    for (int a = 0; a < 3; ++a)
        for (int b = 0; b < 3; ++b) Rt[3 * a + b] = v.R[3 * b + a];
    T GP[9];
    rot_sandwich(Rt, GPc, GP);
    v_prec[0] += GP[0];
    v_prec[1] += GP[1] + GP[3];
    v_prec[2] += GP[2] + GP[6];
    v_prec[3] += GP[4];
    v_prec[4] += GP[5] + GP[7];
    v_prec[5] += GP[8];
}

// Raw (9) -> stored (11) parameters; a culled Gaussian (zs = 0) stays all zeros.
PINNGS_HD void condition(const double r[9], double p[11]) {
    for (int k = 0; k < 11; ++k) p[k] = 0.0;
    if (!(r[8] > 0.0) || !(r[7] > 0.0)) return;
    const double C = r[7], iC = 1.0 / C;
    const double m00 = r[2] - r[5] * r[5] * iC, m01 = r[3] - r[5] * r[6] * iC, m11 = r[4] - r[6] * r[6] * iC;
    const double l00 = sqrt(fmax(m00, 1e-300));
    const double l10 = m01 / l00;
    const double l11 = sqrt(fmax(m11 - l10 * l10, 1e-300));
    p[0] = r[0]; p[1] = r[1]; p[2] = l00; p[3] = l10; p[4] = l11;
    p[5] = r[5] * iC; p[6] = r[6] * iC;
    p[7] = r[2] * iC; p[8] = r[3] * iC; p[9] = r[4] * iC;
    p[10] = r[8] / sqrt(C);
}

// Backward of condition: g11 (stored) -> accumulates into g9 (raw).
PINNGS_HD void condition_bwd(const double r[9], const double g[11], double gr[9]) {
    if (!(r[8] > 0.0) || !(r[7] > 0.0)) return;
    const double C = r[7], iC = 1.0 / C, iC2 = iC * iC;
    const double lx = r[5], ly = r[6];
    const double m00 = r[2] - lx * lx * iC, m01 = r[3] - lx * ly * iC, m11 = r[4] - ly * ly * iC;
    const double l00 = sqrt(fmax(m00, 1e-300));
    const double l10 = m01 / l00;
    const double l11 = sqrt(fmax(m11 - l10 * l10, 1e-300));
    // Cholesky backward: l11² = m11 - l10², l10 = m01 / l00, l00² = m00
    const double gm11 = g[4] / (2.0 * l11);
    const double gl10 = g[3] - g[4] * l10 / l11;
    const double gm01 = gl10 / l00;
    const double gl00 = g[2] - gl10 * m01 / (l00 * l00);
    const double gm00 = gl00 / (2.0 * l00);
    gr[0] += g[0];
    gr[1] += g[1];
    gr[2] += gm00 + g[7] * iC;
    gr[3] += gm01 + g[8] * iC;
    gr[4] += gm11 + g[9] * iC;
    gr[5] += -2.0 * gm00 * lx * iC - gm01 * ly * iC + g[5] * iC;
    gr[6] += -gm01 * lx * iC - 2.0 * gm11 * ly * iC + g[6] * iC;
    gr[7] += (gm00 * lx * lx + gm01 * lx * ly + gm11 * ly * ly) * iC2
             - (g[5] * lx + g[6] * ly + g[7] * r[2] + g[8] * r[3] + g[9] * r[4]) * iC2
             - 0.5 * g[10] * r[8] * iC / sqrt(C);
    gr[8] += g[10] / sqrt(C);
}

// ---------------------------------------------------------------------------------------------
// Conservative detector bound: the pixel rectangle [x0, x1) x [y0, y1) whose centres contain the
// exact perspective image of the k-sigma ellipsoid {E <= k²}. Outside it every ray has E > k², so
// the dropped line integral is below a·sqrt(2π)·σ_max·exp(-k²/2) (sqrt(2π/A) <= sqrt(2π)σ_max).
// Derivation: E <= k²  <=>  h Ã - B̃² <= k² Ã  <=>  Δᵀ[(C-k²)H - λλᵀ]Δ - 2k² λᵀΔ - k² C <= 0,
// a conic in the pixel offset Δ (H the 2x2 of (ca, cb, cc), λ = (lx, ly)). Computed in double:
// it is per (view, Gaussian), and the conic coefficients cancel when the Gaussian is long along
// the ray. Falls back to the whole detector when the image is unbounded (ellipsoid reaches the
// source plane) — conservative by construction.
PINNGS_HD void bound_one(const double p[9], double k, int W, int H, int rect[4]) {
    const double C = p[7], k2 = k * k;
    if (p[8] <= 0.0) { rect[0] = rect[1] = rect[2] = rect[3] = 0; return; }  // culled
    const double m00 = (C - k2) * p[2] - p[5] * p[5];
    const double m01 = (C - k2) * p[3] - p[5] * p[6];
    const double m11 = (C - k2) * p[4] - p[6] * p[6];
    const double det = m00 * m11 - m01 * m01;
    double xmin, xmax, ymin, ymax;
    if (!(C > k2) || !(m00 > 0.0) || !(det > 0.0)) {
        xmin = 0.0; xmax = W; ymin = 0.0; ymax = H;
    } else {
        const double i00 = m11 / det, i01 = -m01 / det, i11 = m00 / det;
        const double bx = k2 * p[5], by = k2 * p[6];
        const double cxo = i00 * bx + i01 * by, cyo = i01 * bx + i11 * by;  // centre offset
        const double Rr = k2 * C + bx * cxo + by * cyo;
        const double ex = sqrt(fmax(Rr * i00, 0.0)), ey = sqrt(fmax(Rr * i11, 0.0));
        xmin = p[0] + cxo - ex; xmax = p[0] + cxo + ex;
        ymin = p[1] + cyo - ey; ymax = p[1] + cyo + ey;
    }
    // pixel j is inside iff its centre j + .5 is in [min, max]; widen by a hair for rounding
    const double eps = 1e-6;
    double fx0 = ceil(xmin - 0.5 - eps), fx1 = floor(xmax - 0.5 + eps) + 1.0;
    double fy0 = ceil(ymin - 0.5 - eps), fy1 = floor(ymax - 0.5 + eps) + 1.0;
    fx0 = fmax(fx0, 0.0); fy0 = fmax(fy0, 0.0);
    fx1 = fmin(fx1, double(W)); fy1 = fmin(fy1, double(H));
    if (fx1 <= fx0 || fy1 <= fy0) { rect[0] = rect[1] = rect[2] = rect[3] = 0; return; }
    rect[0] = int(fx0); rect[1] = int(fy0); rect[2] = int(fx1); rect[3] = int(fy1);
}

// ---------------------------------------------------------------------------------------------
// The per-view preprocessing of one (view v, Gaussian i) pair, and its backward for one Gaussian
// over all views: the bodies the CPU loop (project_cpu.cpp) and the CUDA thread (project.cu) share.
// Inputs as the kernels get them: views [V, VIEW_FLOATS], means [N, 3], precisions [N, 6] (float);
// double precision inside (the bound's conic cancels for Gaussians long along the ray).
PINNGS_HD void project_pair_fwd(int v, int i, int N, const float *views, const float *means,
                                const float *precis, int W, int H, double k, float *params,
                                int *rects) {
    const View<double> view = View<double>::load(views + v * VIEW_FLOATS);
    const double m[3] = {means[3 * i], means[3 * i + 1], means[3 * i + 2]};
    double P[6];
    for (int j = 0; j < 6; ++j) P[j] = precis[6 * i + j];
    double raw[9], p[PINNGS_PARAMS];
    project_one(view, m, P, raw);
    condition(raw, p);
    const long long o = (long long)v * N + i;
    for (int j = 0; j < PINNGS_PARAMS; ++j) params[PINNGS_PARAMS * o + j] = float(p[j]);
    bound_one(raw, k, W, H, rects + 4 * o);
}

// Gradients of one Gaussian's mean and precision from its V views' parameter gradients
// v_params [V, N, PINNGS_PARAMS]; each Gaussian sums its own views, so no two writers collide.
PINNGS_HD void project_gaussian_bwd(int V, int N, int i, const float *views, const float *means,
                                    const float *precis, const float *v_params, float *v_means,
                                    float *v_precis) {
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

// ---------------------------------------------------------------------------------------------
// One pixel-Gaussian pair (stored parameters p[11]), value without the per-pixel factor L:
// amp · ρ^{-1/2} · exp(-E/2), E = |LᵀΔ|² / ρ. Along a pixel row (dy fixed) everything but dx is
// constant: PairRow holds those constants, so the inner loop costs four FMAs, a division, a
// square root and an exponential.
template <typename T> struct PairRow {
    T l00, a0, b2, r0, r1, r2;  // a = l00 dx + a0;  ρ = (r2 dx + r1) dx + r0;  Q = a² + b2
    PINNGS_HD PairRow(T dy, const T p[11])
        : l00(p[2]), a0(p[3] * dy), b2(p[4] * p[4] * dy * dy),
          r0(T(1) + T(2) * p[6] * dy + p[9] * dy * dy), r1(T(2) * (p[5] + p[8] * dy)), r2(p[7]) {}
    PINNGS_HD T value(T dx, T amp) const {
        const T a = l00 * dx + a0;
        const T ir = T(1) / ((r2 * dx + r1) * dx + r0);
        return amp * sqrt(ir) * exp(T(-0.5) * (a * a + b2) * ir);
    }
};

template <typename T>
PINNGS_HD T pair_value(T dx, T dy, const T p[11], T amp) {
    return PairRow<T>(dy, p).value(dx, amp);
}

// Backward core of one pair: with f = G·pair_value, the gradients of f w.r.t. a = l00 dx + l10 dy,
// b = l11 dy and ρ (ga, gb, grho), and re = ρ^{-1/2} exp(-E/2) (so ∂f/∂amp = re·G).
template <typename T>
PINNGS_HD void pair_grad_core(T dx, T dy, const T p[11], T amp, T G, T &ga, T &gb, T &grho, T &re) {
    const T a = p[2] * dx + p[3] * dy, b = p[4] * dy;
    const T rho = T(1) + T(2) * (p[5] * dx + p[6] * dy) + (p[7] * dx + T(2) * p[8] * dy) * dx + p[9] * dy * dy;
    const T ir = T(1) / rho;
    const T Q = a * a + b * b;
    re = sqrt(ir) * exp(T(-0.5) * Q * ir);
    const T f = amp * re * G;
    const T gQ = T(-0.5) * f * ir;                        // ∂f/∂E · ∂E/∂Q
    grho = T(-0.5) * f * ir + T(0.5) * f * Q * ir * ir;   // via ρ^{-1/2} and via E = Q/ρ
    ga = T(2) * gQ * a;
    gb = T(2) * gQ * b;
}

// Gradient of G·pair_value w.r.t. (p[0..9], amp), accumulated into g[11] (g[10]: amp).
template <typename T>
PINNGS_HD void pair_grad(T dx, T dy, const T p[11], T amp, T G, T g[11]) {
    T ga, gb, gr, re;
    pair_grad_core(dx, dy, p, amp, G, ga, gb, gr, re);
    g[0] -= ga * p[2] + gr * T(2) * (p[5] + p[7] * dx + p[8] * dy);  // dx = px - u0
    g[1] -= ga * p[3] + gb * p[4] + gr * T(2) * (p[6] + p[8] * dx + p[9] * dy);
    g[2] += ga * dx;
    g[3] += ga * dy;
    g[4] += gb * dy;
    g[5] += gr * T(2) * dx;
    g[6] += gr * T(2) * dy;
    g[7] += gr * dx * dx;
    g[8] += gr * T(2) * dx * dy;
    g[9] += gr * dy * dy;
    g[10] += re * G;
}

// L(pixel) = |(X, Y, 1)| with X = (px - cx)/fx: obliquity of the pixel ray.
template <typename T> PINNGS_HD T pixel_L(T px, T py, T fx, T fy, T cx, T cy) {
    const T X = (px - cx) / fx, Y = (py - cy) / fy;
    return sqrt(T(1) + X * X + Y * Y);
}

// ---------------------------------------------------------------------------------------------
// Voxelizer: density a·exp(-½ (p-m)ᵀP(p-m)) at a point, and its gradient.
template <typename T>
PINNGS_HD T vox_value(const T d[3], const T P[6], T a) {
    const T E = P[0] * d[0] * d[0] + P[3] * d[1] * d[1] + P[5] * d[2] * d[2] +
                T(2) * (P[1] * d[0] * d[1] + P[2] * d[0] * d[2] + P[4] * d[1] * d[2]);
    return a * exp(T(-0.5) * E);
}

// Conservative voxel box: the k-sigma ellipsoid's axis-aligned extent is k·sqrt(Σ_jj).
PINNGS_HD void vox_bound_one(const float m[3], const float cov[6], double k, const float origin[3],
                             const float spacing[3], const int shape[3], int box[6]) {
    const double ext[3] = {k * sqrt(fmax((double)cov[0], 0.0)), k * sqrt(fmax((double)cov[3], 0.0)),
                           k * sqrt(fmax((double)cov[5], 0.0))};
    for (int a = 0; a < 3; ++a) {
        // voxel j centre at origin + j*spacing; include j iff centre within [m-ext, m+ext]
        double lo = ceil((m[a] - ext[a] - origin[a]) / spacing[a] - 1e-6);
        double hi = floor((m[a] + ext[a] - origin[a]) / spacing[a] + 1e-6) + 1.0;
        lo = fmax(lo, 0.0);
        hi = fmin(hi, double(shape[a]));
        if (hi <= lo) { for (int b = 0; b < 6; ++b) box[b] = 0; return; }
        box[a] = int(lo); box[3 + a] = int(hi);
    }
}

}  // namespace pinngs
